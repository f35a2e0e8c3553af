"""Command-line front end: the same core operations as the tabs, writing files instead of showing them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugins.contract import FACES
from plugins.registry import Registry


def run(args: argparse.Namespace, registry: Registry) -> int:
    if getattr(args, "model", None):
        args.model = resolve_model(registry, args.model)
    if args.command == "models":
        for name in registry.names():
            card = registry.entry(name).card
            print(f"{name:32s} {registry.status(name):16s} {card.resolution:5d}px  {card.licence}")
        for err in registry.errors:
            print(f"[plugin failed] {err.plugin}: {err.message}")
        return 0
    if args.command == "project":
        return project(args, registry)
    if args.command == "interpolate":
        return interpolate(args, registry)
    if args.command == "family":
        return family(args, registry)
    if args.command == "directions":
        return directions(args, registry)
    raise ValueError(f"Unknown command '{args.command}'.")


def resolve_model(registry: Registry, model: str) -> str:
    """A registered name as is; a model file (e.g. a StyleGAN ``.pkl``) added through the plugin that reads it.

    A name nobody registered raises the registry's message, which names the closest ones.
    """
    if model in registry.entries:
        return model
    path = Path(model).expanduser()
    if path.suffix.lower() in registry.file_loaders or path.is_file():
        return registry.add_file(path)
    registry.entry(model)  # raises UnknownModelError with the nearest names
    return model


def _load(registry: Registry, name: str):
    if registry.status(name) == "not downloaded":
        entry = registry.entry(name)
        if entry.download is None:
            raise RuntimeError(f"{entry.card.title} is not available.")
        from tqdm import tqdm

        bar = tqdm(unit="B", unit_scale=True, desc=f"downloading {name}", file=sys.stderr)

        def report(done, total):
            bar.total = total
            bar.n = done
            bar.refresh()

        entry.download(report)
        bar.close()
    model = registry.get(name)
    print(model.card.caption(), file=sys.stderr)  # the caption starts with the title
    return model


def _target(registry: Registry, name: str, model, path: str, align: bool):
    from core.image_input import load_image, model_input
    from core.images import from_pil

    img = load_image(path, min_side=min(16, model.image_size))
    img, warnings = model_input(img, model.image_size, model.channels, align and FACES in registry.entry(name).tags)
    for w in warnings:
        print(f"warning: {Path(path).name}: {w}", file=sys.stderr)
    return img, from_pil(img, model.channels)


def _project(model, target, label: str, space: str, **overrides):
    """Project with the model's defaults and ``overrides`` (see ``ProjectionConfig.for_model``) behind a progress bar."""
    from tqdm import tqdm

    from core.projection import ProjectionConfig, project

    cfg = ProjectionConfig.for_model(model, space, preview_every=0, **overrides)
    bar = tqdm(total=cfg.steps, desc=f"projecting {label}", file=sys.stderr)
    final = None
    for ev in project(model, target, cfg):
        if ev.done:
            final = ev
        else:
            bar.update(1)
            bar.set_postfix(psnr=f"{ev.psnr:.2f}")
    bar.close()
    return final


def project(args: argparse.Namespace, registry: Registry) -> int:
    from core.export import save_latent
    from core.images import to_pil

    model = _load(registry, args.model)
    space = model.check_space(args.space or ("w+" if "w+" in model.spaces else None))
    img, target = _target(registry, args.model, model, args.image, not args.no_align)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ev = _project(model, target, Path(args.image).name, space, steps=args.steps, init=args.init, loss=args.loss, seed=args.seed,
                  optimize_noise=True if args.noise_maps else None)
    img.save(out / "target.png")
    to_pil(ev.preview)[0].save(out / "reconstruction.png")
    save_latent(out / "latent.npz", ev.latent, model=args.model, space=space, noise=ev.noise, psnr=round(ev.psnr, 3), loss=ev.loss,
                loss_name=ev.loss_name, steps=ev.step, licence=model.card.licence)
    print(f"PSNR {ev.psnr:.2f} dB after {ev.step} steps ({ev.loss_name} loss, start: {ev.init}). Wrote {out}/target.png, "
          f"reconstruction.png, latent.npz")
    return 0


def interpolate(args: argparse.Namespace, registry: Registry) -> int:
    """The tab's workflow (``core.interpolate``) with flags for widgets and files for the gallery."""
    import torch

    from core.export import save_frames, save_gif, save_latent, save_mp4
    from core.images import to_pil
    from core.interpolate import describe, image_endpoints, plan_interpolation, seed_endpoints, walk, whole_number

    if args.seeds is None and (args.a is None or args.b is None):
        raise ValueError("Give two images (A B) or --seeds A B.")
    model = _load(registry, args.model)
    plan = plan_interpolation(model, args.frames, args.space, args.method, args.mix or (), args.seeds is None)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.seeds is not None:
        a, b = seed_endpoints(model, plan, *args.seeds)
    else:
        steps = whole_number(args.steps, "number of projection steps", 1, 100_000)
        targets = torch.cat([_target(registry, args.model, model, p, not args.no_align)[1] for p in (args.a, args.b)])
        a, b, _ = _with_bar(steps, "projecting A and B", lambda report: image_endpoints(model, plan, targets, steps, report))
    latents = walk(model, plan, a, b)
    frames = to_pil(model.generate(latents, plan.space))
    out = Path(args.out)
    save_frames(frames, out / "frames")
    save_gif(frames, out / "interpolation.gif", fps=args.fps)
    save_mp4(frames, out / "interpolation.mp4", fps=args.fps)
    save_latent(out / "latents.npz", latents, model=args.model, space=plan.space, method=plan.method, mixing=list(plan.mixing),
                licence=model.card.licence)
    print(f"{describe(plan)}. Wrote {out}/frames/, interpolation.gif, interpolation.mp4, latents.npz")
    return 0


def _with_bar(total: int, label: str, work):
    """Run ``work(report)`` behind a progress bar; ``report(step, steps, psnr)`` moves it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, file=sys.stderr)

    def report(step: int, steps: int, psnr: float) -> None:
        bar.n = step
        bar.set_postfix(psnr=f"{psnr:.2f}")

    try:
        return work(report)
    finally:
        bar.close()


def family(args: argparse.Namespace, registry: Registry) -> int:
    import torch

    from core.export import save_latent, save_mp4
    from core.family import DISCLAIMER, ChildSettings, make_children, morph
    from core.images import to_pil
    from core.user_directions import directions_for

    model = _load(registry, args.model)
    space = "w+" if "w+" in model.spaces else model.default_space
    parents = [_target(registry, args.model, model, p, True) for p in (args.father, args.mother)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for (img, _), who in zip(parents, ("father", "mother"), strict=True):
        img.save(out / f"{who}_aligned.png")
    ev = _project(model, torch.cat([t for _, t in parents]), "father and mother", space, steps=args.steps)
    father, mother = ev.latent[:1].to(model.device), ev.latent[1:].to(model.device)
    for who, rec in zip(("father", "mother"), to_pil(ev.preview), strict=True):
        rec.save(out / f"{who}_projected.png")
    dirs = directions_for(args.model, model)
    names = {d.name for d in dirs}
    attributes = {k: v for k, v in (("age", args.age), ("gender", args.gender)) if v}
    for k in attributes:
        if k not in names:
            raise ValueError(f"{model.card.title} has no '{k}' direction; make one with 'python app.py directions'.")
    chosen = {"coarse": args.coarse, "middle": args.middle, "fine": args.fine}
    settings = ChildSettings(gene_weight=args.gene, dominance={g: who for g, who in chosen.items() if who != "blend"},
                             attributes=attributes, variation=args.variation, seed=args.seed, children=args.children)
    kids = make_children(model, father, mother, space, settings, dirs)
    for i, (img, z) in enumerate(zip(to_pil(model.generate(kids, space)), kids, strict=True)):
        img.save(out / f"child_{i}.png")
        save_latent(out / f"child_{i}.npz", z[None], model=args.model, space=space, gene_weight=args.gene,
                    attributes=attributes, variation=args.variation, seed=args.seed, licence=model.card.licence, note=DISCLAIMER)
    frames = to_pil(model.generate(morph(father, kids[0], mother, 32), space))
    save_mp4(frames, out / "morph_child_0.mp4", fps=12, boomerang=True)
    print(f"Projected parents: PSNR {ev.psnr:.2f} dB. Wrote {len(kids)} children, their latents and morph_child_0.mp4 to {out}.\n"
          f"{DISCLAIMER}")
    return 0


def directions(args: argparse.Namespace, registry: Registry) -> int:
    from tqdm import tqdm

    from core.user_directions import fit_from_folder, save_user_directions

    model = _load(registry, args.model)
    bar = tqdm(desc="encoding photos", file=sys.stderr)

    def report(i, n, name):
        bar.total = n
        bar.n = i
        bar.set_postfix_str(name)
        bar.refresh()

    align = not args.no_align and FACES in registry.entry(args.model).tags
    found, notes = fit_from_folder(model, args.model, args.images, args.labels, args.space, align, args.steps, report)
    bar.close()
    for n in notes:
        print(n)
    if not found:
        raise ValueError("No direction could be fitted from these labels.")
    path = save_user_directions(args.model, found)
    print(f"Saved {len(found)} direction(s) to {path}; the Family tab offers them for {args.model}.")
    return 0
