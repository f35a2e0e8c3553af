"""What a diffusers folder holds, checked before anything in it is loaded, and loading it safely.

Accepted: a pipeline folder (``model_index.json`` naming ``DDPMPipeline`` / ``DDIMPipeline`` with a
``unet/`` and a ``scheduler/``, each written by ``save_pretrained``), or a model folder whose
``config.json`` names ``UNet2DModel`` (with a scheduler config beside it or in ``scheduler/``; DDPM's
defaults otherwise), ``AutoencoderKL``, ``AutoencoderTiny`` or ``VQModel``. Refused with a plain
sentence: Python files anywhere in the folder, classes outside diffusers (a custom pipeline or model),
``auto_map`` (trust_remote_code), conditional UNets. Models are built from their config by diffusers and
their weights read from safetensors, or with ``torch.load(weights_only=True)`` where only a ``.bin``
exists (diffusers' own loader does exactly that), so nothing in a weights file executes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

MODELS = ("UNet2DModel", "AutoencoderKL", "AutoencoderTiny", "VQModel")
VAES = MODELS[1:]
PIPELINES = ("DDPMPipeline", "DDIMPipeline")
SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DDIMInverseScheduler", "PNDMScheduler", "ScoreSdeVeScheduler",
              "EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "LMSDiscreteScheduler")
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


@dataclass(frozen=True)
class FolderModel:
    """A checked folder: which class to build, from which sub-folder, and the scheduler config (UNets)."""

    root: Path
    kind: str  # one of MODELS
    model_dir: Path
    config: dict
    scheduler: dict | None = None

    @property
    def sample_size(self) -> int:
        size = self.config.get("sample_size") or 0
        return int(size[0] if isinstance(size, list | tuple) else size)


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path.name} in {path.parent} is not readable JSON ({e}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} in {path.parent} is not a diffusers config (a JSON object).")
    return data


def _no_remote_code(config: dict, where: Path) -> None:
    if "auto_map" in config or any("custom" in str(k).lower() for k in config):
        raise ValueError(f"{where} asks for its own code (auto_map / custom pipeline, i.e. trust_remote_code): "
                         "Latent Lab never runs code from a model, so it is refused.")


def _weights(folder: Path) -> Path:
    for name in WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder} has no weights file ({' or '.join(WEIGHTS)}).")


def inspect(root: str | Path) -> FolderModel:
    """Check a folder (nothing is imported or loaded from it); a ValueError says what is wrong."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder.")
    code = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))
    if code:
        raise ValueError(f"{root} contains Python code ({', '.join(code[:3])}): Latent Lab never runs a model's own "
                         "code (no trust_remote_code, no custom pipelines), so it is refused.")
    index = root / "model_index.json"
    if index.is_file():
        return _pipeline(root, _json(index))
    if not (root / "config.json").is_file():
        raise ValueError(f"{root} is not a diffusers folder (no model_index.json or config.json).")
    config = _json(root / "config.json")
    return _model(root, root, config)


def _component(value, name: str, root: Path) -> str:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise ValueError(f"model_index.json in {root} describes '{name}' oddly ({value!r}).")
    library, cls = value
    if library != "diffusers":
        raise ValueError(f"model_index.json in {root} names {library}.{cls} for '{name}', a class outside diffusers "
                         "(custom pipeline code): Latent Lab never runs it, so the folder is refused.")
    return str(cls)


def _pipeline(root: Path, index: dict) -> FolderModel:
    _no_remote_code(index, root / "model_index.json")
    pipe = str(index.get("_class_name", ""))
    if pipe not in PIPELINES:
        raise ValueError(f"{root} holds a {pipe or 'unnamed'} pipeline; Latent Lab loads unconditional "
                         f"{' / '.join(PIPELINES)} folders and UNet2DModel, AutoencoderKL, AutoencoderTiny or VQModel models.")
    parts = {k: _component(v, k, root) for k, v in index.items() if not k.startswith("_")}
    if parts.get("unet") != "UNet2DModel" or parts.get("scheduler") not in SCHEDULERS:
        raise ValueError(f"{root}: a {pipe} needs a UNet2DModel 'unet' and a diffusers 'scheduler'; it names {parts}.")
    unet_dir = root / "unet" if (root / "unet" / "config.json").is_file() else root
    sched = root / "scheduler" / "scheduler_config.json"
    sched = sched if sched.is_file() else root / "scheduler_config.json"
    config = _json(unet_dir / "config.json")
    return _model(root, unet_dir, config, _json(sched) if sched.is_file() else None)


def _model(root: Path, model_dir: Path, config: dict, scheduler: dict | None = None) -> FolderModel:
    _no_remote_code(config, model_dir / "config.json")
    cls = str(config.get("_class_name", ""))
    if cls not in MODELS:
        extra = " (conditional, e.g. text-to-image, models are not supported)" if "Condition" in cls else ""
        raise ValueError(f"{root} holds a {cls or 'unnamed'} model{extra}; Latent Lab loads {', '.join(MODELS)}.")
    _weights(model_dir)
    if cls == "UNet2DModel":
        if config.get("class_embed_type") or config.get("num_class_embeds"):
            raise ValueError(f"{root} holds a class-conditional UNet2DModel; only unconditional ones are supported.")
        if scheduler is None:
            for p in (model_dir / "scheduler_config.json", root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json"):
                if p.is_file():
                    scheduler = _json(p)
                    break
        if scheduler is not None:
            _no_remote_code(scheduler, root / "scheduler_config.json")
            if scheduler.get("_class_name", "DDPMScheduler") not in SCHEDULERS:
                raise ValueError(f"{root} names scheduler {scheduler.get('_class_name')}, which is not a diffusers scheduler.")
    return FolderModel(root, cls, model_dir, config, scheduler)


def build(found: FolderModel):
    """The diffusers module of a checked folder, with its weights, in eval mode on the CPU."""
    import diffusers

    cls = getattr(diffusers, found.kind)
    weights = _weights(found.model_dir)
    module = cls.from_pretrained(str(found.model_dir), use_safetensors=weights.suffix == ".safetensors",
                                 low_cpu_mem_usage=False, local_files_only=True)
    return module.eval().requires_grad_(False)
