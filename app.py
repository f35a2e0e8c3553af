"""Latent Lab: explore the latent spaces of generative models.

    python app.py                      # the web app on http://127.0.0.1:7860
    python app.py --share              # plus a public link (when it can be created)
    python app.py project IMAGE --model small_ae/faces --out out/
    python app.py interpolate A B --model small_ae/digits --frames 16 --out out/

Run ``python app.py -h`` or ``python app.py COMMAND -h`` for every option.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

MODEL_HELP = "a model name (python app.py models lists them) or a model file, e.g. a StyleGAN network-snapshot.pkl"


def _private_environment() -> None:
    """No telemetry; Gradio's file cache in a private folder that is deleted on exit."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if "GRADIO_TEMP_DIR" not in os.environ:
        tmp = tempfile.mkdtemp(prefix="latent_lab_gradio_")
        os.chmod(tmp, 0o700)
        os.environ["GRADIO_TEMP_DIR"] = tmp
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def options(parser: argparse.ArgumentParser, default) -> argparse.ArgumentParser:
        parser.add_argument("--plugins-dir", default=default(None), help="a folder of extra model plugins (*.py files or packages)")
        parser.add_argument("--device", default=default("auto"), help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
        return parser

    # Given before or after the command; the subcommands' copies must not reset what was given before.
    common = options(argparse.ArgumentParser(add_help=False), lambda _: argparse.SUPPRESS)
    p = options(argparse.ArgumentParser(prog="app.py", description="Latent Lab: explore generative latent spaces."), lambda d: d)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for the local network)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860, or the next free one)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD", help="require a login (repeatable)")
    p.add_argument("--max-file-size", default="20mb", help="largest upload accepted, e.g. 20mb")
    p.add_argument("--max-steps", type=int, default=1000, help="largest number of projection steps a user may ask for")
    p.add_argument("--concurrency", type=int, default=1, help="heavy jobs (projection, maps) run at the same time")
    sub = p.add_subparsers(dest="command")

    pr = sub.add_parser("project", parents=[common], help="project an image into a model's latent space")
    pr.add_argument("image")
    pr.add_argument("--model", required=True, help=MODEL_HELP)
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--space", default=None)
    pr.add_argument("--steps", type=int, default=200)
    pr.add_argument("--init", default="auto", choices=["auto", "encoder", "mean", "bank"])
    pr.add_argument("--loss", default="auto", help="mse, ms-ssim+l1, lpips (once vgg16.pt is downloaded) or auto: the model's choice")
    pr.add_argument("--noise-maps", action="store_true",
                    help="also optimise StyleGAN2 noise maps (NVIDIA's recipe; saved in latent.npz)")
    pr.add_argument("--no-align", action="store_true", help="do not detect and align faces (face models)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--face", type=int, default=0, metavar="N", help="which face of a photo with several (0 = the largest)")

    it = sub.add_parser("interpolate", parents=[common], help="interpolate between two images (or seeds: --seeds A B)")
    it.add_argument("a", nargs="?", help="image A (omit with --seeds)")
    it.add_argument("b", nargs="?", help="image B (omit with --seeds)")
    it.add_argument("--seeds", nargs=2, type=int, metavar=("SEED_A", "SEED_B"))
    it.add_argument("--model", required=True, help=MODEL_HELP)
    it.add_argument("--out", required=True)
    it.add_argument("--frames", type=int, default=16)
    it.add_argument("--space", default=None)
    it.add_argument("--method", default="auto", choices=["auto", "lerp", "slerp"])
    it.add_argument("--mix", nargs="+", choices=["coarse", "middle", "fine"], default=None,
                    help="style mixing: take only these layer groups from B (StyleGAN, W+)")
    it.add_argument("--steps", type=int, default=100, help="projection steps for image endpoints")
    it.add_argument("--fps", type=float, default=12)
    it.add_argument("--no-align", action="store_true")

    fa = sub.add_parser("family", parents=[common], help="blend a father's and a mother's photo into children")
    fa.add_argument("father")
    fa.add_argument("mother")
    fa.add_argument("--model", required=True, help="a face model, e.g. small_ae/faces or stylegan2/ffhq-256")
    fa.add_argument("--out", required=True)
    fa.add_argument("--children", type=int, default=4, help="how many children (1 or more)")
    fa.add_argument("--gene", type=float, default=0.5, help="0 = father, 1 = mother")
    fa.add_argument("--coarse", choices=["blend", "father", "mother"], default="blend", help="who dominates the coarse layers (W+)")
    fa.add_argument("--middle", choices=["blend", "father", "mother"], default="blend")
    fa.add_argument("--fine", choices=["blend", "father", "mother"], default="blend")
    fa.add_argument("--age", type=float, default=0.0, help="move along the age direction (standard deviations)")
    fa.add_argument("--gender", type=float, default=0.0,
                    help="move along the gender direction (standard deviations); for small_ae/faces positive = male, negative "
                         "= female (the direction's positive class, shown in the Family tab for every model)")
    fa.add_argument("--variation", type=float, default=0.25)
    fa.add_argument("--seed", type=int, default=0)
    fa.add_argument("--steps", type=int, default=200, help="projection steps per parent")
    fa.add_argument("--face", type=int, nargs="+", default=[0], metavar="N",
                    help="which face of a photo with several (0 = the largest): one number for both photos, or father's mother's")

    di = sub.add_parser("directions", parents=[common], help="learn attribute directions from a labelled folder of photos")
    di.add_argument("--model", required=True)
    di.add_argument("--images", required=True, help="folder of photos")
    di.add_argument("--labels", required=True, help="CSV: a file/id column, optional person column, one column per label")
    di.add_argument("--space", default=None, help="latent space to fit in (default: w for StyleGAN)")
    di.add_argument("--steps", type=int, default=200, help="projection steps per photo (models without an encoder)")
    di.add_argument("--no-align", action="store_true")

    sub.add_parser("models", parents=[common], help="list the models, their status and licence")
    return p.parse_args(argv)


def make_registry(plugins_dir: str | None):
    from plugins.registry import Registry

    return Registry().discover(plugins_dir)


def serve(args: argparse.Namespace) -> None:
    from demos.app import build_app, launch

    registry = make_registry(args.plugins_dir)
    for err in registry.errors:
        print(f"warning: plugin {err.plugin} failed to load: {err.message}", file=sys.stderr)
    demo = build_app(registry, max_steps=args.max_steps, concurrency=args.concurrency)
    launch(demo, host=args.host, port=args.port, share=args.share, auth=args.auth, max_file_size=args.max_file_size)


def main(argv: list[str] | None = None) -> int:
    _private_environment()
    args = parse_args(argv)
    try:
        if args.device != "auto":
            from core.device import set_device

            set_device(args.device)
        if args.command is None:
            serve(args)
            return 0
        from demos import cli

        return cli.run(args, make_registry(args.plugins_dir))
    except KeyboardInterrupt:
        return 130
    except (ValueError, RuntimeError, OSError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # str(KeyError) would add quotes
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
