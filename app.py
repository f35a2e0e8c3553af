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
import signal
import sys
from pathlib import Path

MODEL_HELP = "a model name (python app.py models lists them) or a model file, e.g. a StyleGAN network-snapshot.pkl"
TUNE_HELP = ("decoder-tuning steps after projection (pivotal tuning: the decoder learns the photo, so the face stays that "
             "person; default: the model's, 100 for small_ae/faces, 0 = off)")


_RUN_DIR: Path | None = None
_INDUCTOR_DIR: list[str | None] = [None]  # the TORCHINDUCTOR_CACHE_DIR this process set (inside _RUN_DIR)


MAX_SIDE_HELP = ("models that work at any size (VAEs): the photo is used at its own aspect, each side rounded to a multiple of "
                 "the model's factor, the longer side at most this many pixels (default: 512 on a CPU, 1024 on a GPU)")

def _private_environment(keep_files: bool = False) -> Path:
    """No telemetry; Gradio's file cache in this run's private folder, removed at exit (``core/private_dir.py``).

    The folder is made inside ``$GRADIO_TEMP_DIR`` when that is set, else in the system temp folder (``$TMPDIR``);
    folders left there by an earlier run of this app that crashed are removed first.
    """
    global _RUN_DIR
    from core import private_dir

    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if _RUN_DIR is None or not _RUN_DIR.is_dir():
        base = os.environ.get("GRADIO_TEMP_DIR") or None
        if base:
            os.makedirs(base, exist_ok=True)
        for gone in private_dir.remove_stale(base):
            print(f"Removed {gone}, left by an earlier run of Latent Lab that did not stop cleanly.", file=sys.stderr)
        _RUN_DIR = private_dir.create(base, keep=keep_files)
        os.environ["GRADIO_TEMP_DIR"] = str(_RUN_DIR)
        # Importing torch._dynamo (which torch's own modules do) makes torch inductor's cache folder, by default
        # $TMPDIR/torchinductor_<user>, left behind empty; the app compiles nothing, so it lives and goes with the run.
        if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, _INDUCTOR_DIR[0]):  # unless the user chose one
            _INDUCTOR_DIR[0] = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(_RUN_DIR / "torchinductor")
        if keep_files:
            print(f"--keep-files: uploads and outputs are kept in {_RUN_DIR} (delete it yourself).", file=sys.stderr)
        else:
            atexit.register(private_dir.remove, _RUN_DIR)
    return _RUN_DIR


class _Stop(KeyboardInterrupt):
    """SIGTERM / SIGHUP / SIGINT: stop like Ctrl-C (Gradio's serving loop already ends cleanly on KeyboardInterrupt)."""


def _stop_on_signals() -> list[int]:
    """Turn SIGTERM, SIGHUP and SIGINT into a clean stop; returns the signals received (for the exit status).

    SIGINT is set explicitly: a background job of a non-interactive shell starts with it ignored.
    """
    received: list[int] = []

    def handler(signum, _frame):
        received.append(signum)
        if len(received) == 1:  # once: a second signal must not interrupt the clean-up
            raise _Stop()

    for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, handler)
    return received


def _env_port() -> int | None:
    value = os.environ.get("GRADIO_SERVER_PORT", "")
    return int(value) if value.isdigit() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def options(parser: argparse.ArgumentParser, default) -> argparse.ArgumentParser:
        parser.add_argument("--plugins-dir", default=default(None), help="a folder of extra model plugins (*.py files or packages)")
        parser.add_argument("--device", default=default("auto"), help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N")
        parser.add_argument("--ray", default=default(None), metavar="ADDRESS",
                            help="run projections and decoding on a Ray Serve deployment: auto (this machine's cluster), "
                                 "ray://HEAD:10001, or local (start Ray here); needs requirements-ray.txt")
        parser.add_argument("--ray-replicas", type=int, default=default(1), metavar="N",
                            help="model worker replicas with --ray (one GPU each when the cluster has GPUs)")
        return parser

    # Given before or after the command; the subcommands' copies must not reset what was given before.
    common = options(argparse.ArgumentParser(add_help=False), lambda _: argparse.SUPPRESS)
    p = options(argparse.ArgumentParser(prog="app.py", description="Latent Lab: explore generative latent spaces."), lambda d: d)
    # $GRADIO_SERVER_NAME / $GRADIO_SERVER_PORT are what hosts such as Hugging Face Spaces set.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
                   help="interface to listen on (0.0.0.0 for the local network; default $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=_env_port(),
                   help="port (default $GRADIO_SERVER_PORT, else 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASSWORD", help="require a login (repeatable)")
    p.add_argument("--max-file-size", default="20mb", help="largest upload accepted, e.g. 20mb")
    p.add_argument("--max-steps", type=int, default=1000, help="largest number of projection steps a user may ask for")
    p.add_argument("--concurrency", type=int, default=None,
                   help="heavy jobs (projection, maps, Family) run at the same time (default: one per GPU, else one per 4 cores)")
    p.add_argument("--max-models", type=int, default=4,
                   help="loaded models kept in memory; the least recently used is freed first (default 4)")
    p.add_argument("--max-model-memory", type=_memory_size, default="2GB", metavar="SIZE",
                   help="loaded models' weights and buffers together, e.g. 2GB or 512MB; beyond it the least recently "
                        "used are freed first (default 2GB)")
    p.add_argument("--models-dir", default=None, metavar="FOLDER",
                   help="the one server folder whose .pkl files visitors may add by name (default: uploads only)")
    p.add_argument("--allow-shared-uploads", action="store_true",
                   help="an uploaded .pkl is kept in the user cache and offered to every visitor (default: private to its session)")
    p.add_argument("--keep-files", action="store_true",
                   help="debugging only: keep uploads and outputs after sessions end and after the app stops")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                   help="a session with no open browser tab (REST calls) ends after this long idle (default 600)")
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
    pr.add_argument("--tune-steps", type=int, default=None,
                    help=TUNE_HELP)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--face", type=int, default=1, metavar="N",
                    help="which face of a photo with several, numbered from 1 = the largest (as the app's face picker)")
    pr.add_argument("--max-side", type=int, default=None, metavar="PX", help=MAX_SIDE_HELP)

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
    it.add_argument("--tune-steps", type=int, default=None, help=TUNE_HELP)
    it.add_argument("--decode-steps", type=int, default=None, metavar="N",
                    help="sampling steps per frame for a diffusion model (default: the model's, 50); ignored by other models")
    it.add_argument("--fps", type=float, default=12)
    it.add_argument("--no-loop", action="store_true",
                    help="the GIF and MP4 play once forward (default, as in the app: forward then back)")
    it.add_argument("--no-align", action="store_true")
    it.add_argument("--max-side", type=int, default=None, metavar="PX", help=MAX_SIDE_HELP + "; image B is fitted to A's size")

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
    fa.add_argument("--variation", type=float, default=None,
                    help="mutation on top of the inherited traits, in population standard deviations (default: the tab's, core.children.VARIATION)")
    fa.add_argument("--seed", type=int, default=0)
    fa.add_argument("--steps", type=int, default=100, help="projection steps per parent (core.family.PROJECTION_STEPS)")
    fa.add_argument("--decode-steps", type=int, default=None, metavar="N",
                    help="sampling steps when a diffusion model draws parents and children (default: the model's, 50)")
    fa.add_argument("--tune-steps", type=int, default=None,
                    help=TUNE_HELP)
    fa.add_argument("--face", type=int, nargs="+", default=[1], metavar="N",
                    help="which face of a photo with several, numbered from 1 = the largest (as the app's face picker): one "
                         "number for both photos, or father's mother's")

    di = sub.add_parser("directions", parents=[common], help="learn attribute directions from a labelled folder of photos")
    di.add_argument("--model", required=True)
    di.add_argument("--images", required=True, help="folder of photos")
    di.add_argument("--labels", required=True, help="CSV: a file/id column, optional person column, one column per label")
    di.add_argument("--space", default=None, help="latent space to fit in (default: w for StyleGAN)")
    di.add_argument("--steps", type=int, default=200, help="projection steps per photo (models without an encoder)")
    di.add_argument("--no-align", action="store_true")

    ed = sub.add_parser("edit", parents=[common], help="move a photo or a saved latent along directions (age, PC1, …)")
    ed.add_argument("input", help="a photo (projected first) or a latent .npz saved by the app or `project`")
    ed.add_argument("--model", default=None, help=MODEL_HELP + " (default for a .npz: the model it was saved from)")
    ed.add_argument("--out", required=True, help="output folder")
    ed.add_argument("--direction", action="append", metavar="NAME=AMOUNT",
                    help="move along NAME by AMOUNT standard deviations (repeatable), e.g. --direction age=1.5")
    ed.add_argument("--layers", default="all", help="W+ only: all, coarse, middle, fine (joined by +) or layer numbers")
    ed.add_argument("--keep-fixed", action="append", metavar="NAME",
                    help="keep this direction fixed while moving the others (conditional edit; repeatable)")
    ed.add_argument("--strip", action="append", metavar="NAME", help="also write NAME at -2…+2 std as one picture (repeatable)")
    ed.add_argument("--space", default=None, help="for a photo: the space to project into (default: the model's edit space)")
    ed.add_argument("--steps", type=int, default=200, help="for a photo: projection steps")
    ed.add_argument("--tune-steps", type=int, default=None, help=TUNE_HELP)
    ed.add_argument("--no-align", action="store_true", help="for a photo: do not detect and align the face")

    sub.add_parser("models", parents=[common], help="list the models, their status and licence")
    return p.parse_args(argv)


def make_executor(args: argparse.Namespace):
    """In-process (None) unless ``--ray`` is given: then a Ray Serve deployment of ``--ray-replicas`` model workers."""
    if not getattr(args, "ray", None):
        return None
    from demos.ray_executor import RayExecutor

    return RayExecutor(args.ray, replicas=args.ray_replicas, plugins_dir=args.plugins_dir,
                       max_model_bytes=getattr(args, "max_model_memory", None))


def _memory_size(text: str) -> int:
    """argparse type of --max-model-memory: the plain sentence of ``parse_bytes`` as argparse's error."""
    from plugins.registry import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def make_registry(plugins_dir: str | None, max_models: int | None = None, max_bytes: int | None = None):
    from plugins.registry import Registry

    return Registry(max_models=max_models, max_bytes=max_bytes).discover(plugins_dir)


def serve(args: argparse.Namespace) -> None:
    from demos.app import build_app, launch

    registry = make_registry(args.plugins_dir, args.max_models, args.max_model_memory)
    for err in registry.errors:
        print(f"warning: plugin {err.plugin} failed to load: {err.message}", file=sys.stderr)
    idle = {} if args.idle_timeout is None else {"idle_s": args.idle_timeout}
    executor = make_executor(args)
    demo = build_app(registry, max_steps=args.max_steps, concurrency=args.concurrency, models_dir=args.models_dir,
                     allow_shared_uploads=args.allow_shared_uploads, keep_files=args.keep_files, executor=executor, **idle)
    launch(demo, host=args.host, port=args.port, share=args.share, auth=args.auth, max_file_size=args.max_file_size)


def _finish_serving(run_dir: Path, keep_files: bool, received: list[int], code: int) -> None:
    """Remove the run's folder and exit at once: worker threads still finishing a job get no chance to write again."""
    from core import private_dir

    if not keep_files:
        private_dir.remove(run_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + received[0] if received else code)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_dir = _private_environment(keep_files=args.keep_files)
    if args.command is None:
        received = _stop_on_signals()
        code = 0
        try:
            if args.device != "auto":
                from core.device import set_device

                set_device(args.device)
            serve(args)
        except KeyboardInterrupt:
            pass
        except (ValueError, RuntimeError, OSError, KeyError) as e:
            print(f"error: {str(e).strip(chr(39))}", file=sys.stderr)
            code = 2
        finally:
            _finish_serving(run_dir, args.keep_files, received, code)
    try:
        if args.device != "auto":
            from core.device import set_device

            set_device(args.device)
        from demos import cli

        executor = make_executor(args) if args.command != "models" else None
        try:
            return cli.run(args, make_registry(args.plugins_dir), executor)
        finally:
            if executor is not None:
                executor.close()
    except KeyboardInterrupt:
        return 130
    except (ValueError, RuntimeError, OSError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # str(KeyError) would add quotes
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
