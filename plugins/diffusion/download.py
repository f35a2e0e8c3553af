"""Fetch a diffusers model into the Hugging Face cache ahead of time: ``python -m plugins.diffusion.download REPO``.

REPO is a hub id (``google/ddpm-cifar10-32``) or a catalog name (``diffusion/taesd``). Resumes a cut download.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from plugins.diffusion import catalog, hub

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("repos", nargs="+", help="hub ids or catalog names (diffusion/...)")
    args = parser.parse_args(argv)
    for repo in args.repos:
        repo = catalog.CATALOG[repo][0] if repo in catalog.CATALOG else repo
        bar = tqdm(unit="B", unit_scale=True, desc=repo, file=sys.stderr)

        def report(done: int, total: int | None, bar=bar) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        try:
            folder = hub.download(repo, report)
        except (ValueError, ConnectionError) as e:
            bar.close()
            print(f"error: {e}", file=sys.stderr)
            return 1
        bar.close()
        print(f"{repo}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
