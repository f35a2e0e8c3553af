"""Command-line front end: the same core operations as the tabs, writing files instead of showing them."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.handle import ModelHandle
from plugins.registry import Registry

if TYPE_CHECKING:
    from core.executor import Executor


def run(args: argparse.Namespace, registry: Registry, executor: Executor | None = None) -> int:
    """Run one command; ``executor`` runs the heavy model work (``core.executor``; default: in this process)."""
    from core.executor import LOCAL

    executor = executor or LOCAL
    if args.command == "directions":
        check_labelled_folder(args.images, args.labels)  # before any model is downloaded or loaded
    if getattr(args, "model", None):
        args.model = resolve_model(registry, args.model)
    if args.command == "models":
        for name in registry.names():
            card = registry.entry(name).card
            size = f"{card.resolution:5d}px" if card.resolution else "    any"
            print(f"{name:32s} {registry.status(name):16s} {size}  {card.licence}")
        for err in registry.errors:
            print(f"[plugin failed] {err.plugin}: {err.message}")
        return 0
    if args.command == "project":
        return project(args, registry, executor)
    if args.command == "interpolate":
        return interpolate(args, registry, executor)
    if args.command == "family":
        return family(args, registry, executor)
    if args.command == "directions":
        return directions(args, registry, executor)
    if args.command == "edit":
        return edit(args, registry, executor)
    raise ValueError(f"Unknown command '{args.command}'.")


def check_labelled_folder(images: str, labels: str) -> None:
    """``directions``' inputs, checked in a sentence each before anything is downloaded or loaded."""
    if not Path(images).expanduser().is_dir():
        raise ValueError(f"The images folder {images} does not exist (--images names a folder of photos).")
    csv = Path(labels).expanduser()
    if not csv.is_file():
        raise ValueError(f"The labels file {labels} does not exist (--labels names a CSV: a file/id column, "
                         "optional person column, one column per label).")


def resolve_model(registry: Registry, model: str) -> str:
    """A registered name as is; a model file (e.g. a StyleGAN ``.pkl``), a model folder or a Hugging Face Hub id
    (diffusers) added through the plugin that reads it.

    A name nobody registered raises the registry's message, which names the closest ones.
    """
    if model in registry.entries:
        return model
    path = Path(model).expanduser()
    ours = {n.split("/")[0] for n in registry.entries}  # "small_ae/facez" is a typo, not a hub id
    if not path.exists() and model.split("/")[0] in ours:
        registry.entry(model)  # raises UnknownModelError with the nearest names
    if registry.loader_key(model) is not None or path.is_file():
        name = registry.add_file(path)
        if not path.exists() and registry.status(name) == "not downloaded":  # a hub id: fetch it now, or say plainly why not
            try:
                _load(registry, name, announce=False)
            except (ConnectionError, RuntimeError) as e:
                raise ValueError(f"Unknown model {model}: not a model name, file or folder here; as a Hugging Face Hub id: {e}") from None
        return name
    registry.entry(model)  # raises UnknownModelError with the nearest names
    return model


def _load(registry: Registry, name: str, announce: bool = True):
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

        try:
            entry.download(report)
        finally:
            bar.close()
    model = registry.get(name)
    if announce:
        print(model.card.caption(), file=sys.stderr)  # the caption starts with the title
    return model


def _target(handle: ModelHandle, path: str, align: bool, face: int = 1, max_side: int | None = None,
            shape: tuple[int, int] | None = None):
    """What the model sees of the photo at ``path`` (``core.image_input.input_for``): face-aligned when ``align`` and
    it is a face model; a model that works at any size (a VAE) takes it at its own aspect, longer side at most
    ``max_side`` (None: the default), or at ``shape``; run the model at ``inp.shape`` (``model.at_size``). ``face``:
    which face to align, 1 = the largest (``--face``)."""
    from core.faces import find_faces
    from core.image_input import default_max_side, input_for, load_image
    from core.images import from_pil
    from demos.face_numbers import face_index

    model = handle.model
    img = load_image(path, min_side=min(16, model.image_size))
    aligned = align and handle.is_face_model
    found = find_faces(img) if aligned else None  # NoFaceError: a plain sentence
    index = face_index(face, len(found.faces), "--face") if aligned else 0
    inp = input_for(model, img, aligned, index, None if shape else (max_side or default_max_side()), shape, found=found)
    for w in [*inp.warnings, inp.note]:
        if w:
            print(f"warning: {Path(path).name}: {w}", file=sys.stderr)
    return inp, from_pil(inp.image, model.channels)


def _progress(events, total: int, label: str):
    """Relay projection (then decoder-tuning) events behind a progress bar per stage; return the final projection event
    and the last event (the tuning's, holding the tuned decoder, when there was one)."""
    from tqdm import tqdm

    bar, stage, final, ev = None, None, None, None
    for ev in events:
        if ev.stage != stage:
            if bar is not None:
                bar.close()
            stage = ev.stage
            bar = tqdm(total=ev.steps if stage != "projecting" else total, desc=f"{stage} {label}", file=sys.stderr)
        if ev.done:
            final = final or ev
        else:
            bar.total = ev.steps  # an iterative inversion (DDIM) also counts its reconstruction steps
            bar.update(1)
            bar.set_postfix(psnr=f"{ev.psnr:.2f}")
    if bar is not None:
        bar.close()
    return final, ev


def project(args: argparse.Namespace, registry: Registry, executor: Executor) -> int:
    """The Projection tab's workflow (``core.photo_to_latent``, ``core.projection_outcome``): files for its views."""
    from core.export import save_latent
    from core.images import to_pil
    from core.photo_to_latent import project_and_tune
    from core.projection import ProjectionConfig
    from core.projection_outcome import finish_projection

    handle = registry.handle(args.model, _load(registry, args.model))
    space = handle.model.check_space(args.space or handle.model.edit_space())
    inp, target = _target(handle, args.image, not args.no_align, args.face, getattr(args, "max_side", None))
    model = handle.model.at_size(*inp.shape)  # itself, or a VAE at the photo's size
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = ProjectionConfig.for_model(model, space, preview_every=0, steps=args.steps, init=args.init, loss=args.loss,
                                     seed=args.seed, optimize_noise=True if args.noise_maps else None)
    events = project_and_tune(model, target, cfg, args.tune_steps, weights=inp.weights, executor=executor)
    projected, last = _progress(events, cfg.steps, Path(args.image).name)
    outcome = finish_projection(replace(handle, model=model), inp, projected, last if last.stage == "tuning" else None)
    inp.image.save(out / "target.png")
    to_pil(outcome.shown)[0].save(out / "reconstruction.png")
    wrote = ["target.png", "reconstruction.png", "latent.npz"]
    if outcome.composite is not None:
        to_pil(outcome.composite)[0].save(out / "composite.png")
        wrote.append("composite.png (the reconstructed face pasted into the photo's crop: for display, never scored)")
    if outcome.projection_alone is not None:  # what the latent draws with the model itself (the tab offers it too)
        to_pil(outcome.projection_alone)[0].save(out / "projection_alone.png")
        wrote.append("projection_alone.png (the latent drawn by the model itself, without the tuned decoder)")
    save_latent(out / "latent.npz", **outcome.latent_fields())
    where = " inside the face" if outcome.inside_face else ""
    identity = f"; {outcome.identity_sentence()}" if outcome.identity is not None else ""
    tuned = f" {outcome.tuning_sentence()}" if outcome.tuned is not None else ""
    print(f"PSNR{where} {outcome.psnr:.2f} dB after {projected.step} steps ({projected.loss_name} loss, start: "
          f"{projected.init}){identity}.{tuned} Wrote {out}/{', '.join(wrote)}")
    return 0


def interpolate(args: argparse.Namespace, registry: Registry, executor: Executor) -> int:
    """The tab's workflow (``core.interpolate``) with flags for widgets and files for the gallery."""
    import torch

    from core.export import save_frames, save_gif, save_latent, save_mp4
    from core.image_input import stacked_weights
    from core.images import to_pil
    from core.interpolate import interpolate_images, interpolate_seeds, plan_interpolation, whole_number

    if args.seeds is None and (args.a is None or args.b is None):
        raise ValueError("Give two images (A B) or --seeds A B.")
    handle = registry.handle(args.model, _load(registry, args.model))
    plan = plan_interpolation(handle.model, args.frames, args.space, args.method, args.mix or (), args.seeds is None)
    decode_kw = handle.model.decode_options(getattr(args, "decode_steps", None), inverted=args.seeds is None)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.seeds is not None:
        result = interpolate_seeds(handle, plan, *args.seeds, executor=executor, decode=decode_kw)
    else:
        steps = whole_number(args.steps, "number of projection steps", 1, 100_000)
        first = _target(handle, args.a, not args.no_align, max_side=getattr(args, "max_side", None))
        pairs = [first, _target(handle, args.b, not args.no_align, shape=first[0].shape)]
        sized = replace(handle, model=handle.model.at_size(*first[0].shape))  # a VAE works at A's size (B is fitted to it)
        targets, weights = torch.cat([t for _, t in pairs]), stacked_weights([i for i, _ in pairs])
        result = _with_bar(steps, "projecting A and B", lambda report: interpolate_images(
            sized, plan, targets, steps, report, weights, executor, args.tune_steps, decode_kw))
    frames = to_pil(result.frames)
    out = Path(args.out)
    save_frames(frames, out / "frames")
    boomerang = not getattr(args, "no_loop", False)  # as the tab: forward then back, frames at least 256 px
    save_gif(frames, out / "interpolation.gif", fps=args.fps, boomerang=boomerang, min_side=256)
    save_mp4(frames, out / "interpolation.mp4", fps=args.fps, boomerang=boomerang)
    save_latent(out / "latents.npz", **result.latent_fields())
    ends = f" {result.endpoints_sentence()}" if result.psnr is not None else ""
    print(f"{result.summary()}.{ends} Wrote {out}/frames/, interpolation.gif, interpolation.mp4, latents.npz")
    return 0


def _with_bar(total: int, label: str, work):
    """Run ``work(report)`` behind a progress bar; ``report(step, steps, psnr)`` moves it."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, file=sys.stderr)
    stages = ["projecting"]

    def report(step: int, steps: int, psnr: float, stage: str = "projecting") -> None:
        if stage != stages[-1]:  # then the decoder is tuned: a bar of its own steps
            stages.append(stage)
            bar.reset(total=steps)
            bar.set_description(stage)
        bar.n = step
        bar.set_postfix(psnr=f"{psnr:.2f}")

    try:
        return work(report)
    finally:
        bar.close()


def family(args: argparse.Namespace, registry: Registry, executor: Executor) -> int:
    """The Family tab's workflow (core.family.Family) with flags for widgets and files for views."""
    from core.children import VARIATION
    from core.export import save_latent, save_mp4
    from core.faces.identity import verdict
    from core.family import DISCLAIMER, ChildSettings, Family
    from core.handle import NotAFaceModelError, face_model_refusal
    from core.tags import FACES
    from demos.face_numbers import set_parent_face

    if not 1 <= len(args.face) <= 2:
        raise ValueError("--face takes one face number (both photos) or two (father's, mother's).")
    entry = registry.entry(args.model)
    if FACES not in entry.tags:  # said before a model is downloaded or loaded
        raise NotAFaceModelError(face_model_refusal(entry.card.title, "Family"))
    handle = registry.handle(args.model, _load(registry, args.model))
    model = handle.model
    fam = Family(handle, executor=executor)
    fam.set_decode_steps(getattr(args, "decode_steps", None))
    settings = ChildSettings(gene_weight=args.gene, dominance={"coarse": args.coarse, "middle": args.middle, "fine": args.fine},
                             attributes={k: v for k, v in (("age", args.age), ("gender", args.gender)) if v},
                             variation=VARIATION if args.variation is None else args.variation, seed=args.seed, children=args.children)
    for w in fam.check(settings):  # refused before any projection; unreliable directions said, as in the tab
        print(f"warning: {w}", file=sys.stderr)
    out = Path(args.out)
    faces = args.face * 2 if len(args.face) == 1 else args.face
    for who, path, face in zip(("father", "mother"), (args.father, args.mother), faces, strict=True):
        p = set_parent_face(fam, who, path, face, "--face")  # 1 = the largest face
        if p.error:
            raise ValueError(f"The {who}'s photo ({Path(path).name}): {p.error}")
        for w in p.warnings:
            print(f"warning: {who}: {w}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    for p in fam.parents.values():
        p.crop.save(out / f"{p.who}_aligned.png")
    _progress(fam.project(args.steps, tune_steps=args.tune_steps), args.steps, "father and mother")
    for p in fam.parents.values():
        p.reconstruction.save(out / f"{p.who}_projected.png")
        tuned = " (decoder tuned to both photos)" if p.tuned else ""
        colours = (f"; with the photo's colours put back (one global map) {p.identity_shown:.2f}"
                   if fam.colour is not None and p.identity_shown is not None else "")
        print(f"{p.who}: PSNR inside the face {p.psnr:.2f} dB, {verdict(p.identity)}{tuned}{colours}")
    kids = fam.children(settings)
    s = kids.settings
    for i, (img, z, (to_f, to_m)) in enumerate(zip(kids.images, kids.latents, kids.identity, strict=True)):
        img.save(out / f"child_{i}.png")
        save_latent(out / f"child_{i}.npz", z[None], model=args.model, space=kids.space, gene_weight=s.gene_weight,
                    dominance=s.dominance, attributes=s.attributes, variation=s.variation, seed=s.seed, index=i,
                    identity_to_father=round(to_f, 4), identity_to_mother=round(to_m, 4),
                    parents_distance=round(kids.parents_distance, 4), licence=model.card.licence, note=DISCLAIMER,
                    decoder=fam.decoder.card.title)
        print(f"child {i}: identity distance to father {to_f:.2f}, to mother {to_m:.2f}")
    save_mp4(fam.morph(0, settings, 32), out / "morph_child_0.mp4", fps=12, boomerang=True)
    if kids.colour_weight is not None:
        print(f"Identity is measured on the model's own drawings; the parents were fitted with their face colours matched "
              f"to each other, and the children are shown with skin tones blended {1 - kids.colour_weight:.0%} father / "
              f"{kids.colour_weight:.0%} mother (one global colour map).")
    n = len(kids.images)
    print(f"The parents are {kids.parents_distance:.2f} apart (below 0.6 reads as the same person). "
          f"Wrote {n} {'child' if n == 1 else 'children'}, their latents and morph_child_0.mp4 to {out}.\n{DISCLAIMER}")
    return 0


def directions(args: argparse.Namespace, registry: Registry, executor: Executor) -> int:
    from tqdm import tqdm

    from core.user_directions import fit_from_folder, save_user_directions

    handle = registry.handle(args.model, _load(registry, args.model))
    bar = tqdm(desc="encoding photos", file=sys.stderr)

    def report(i, n, name):
        bar.total = n
        bar.n = i
        bar.set_postfix_str(name)
        bar.refresh()

    align = not args.no_align and handle.is_face_model
    found, notes = fit_from_folder(handle.model, args.model, args.images, args.labels, args.space, align, args.steps, report,
                                   executor)
    bar.close()
    for n in notes:
        print(n)
    if not found:
        raise ValueError("No direction could be fitted from these labels.")
    path = save_user_directions(args.model, found)
    print(f"Saved {len(found)} direction(s) to {path}; the Family tab offers them for {args.model}.")
    return 0


def _amounts(pairs: list[str] | None) -> dict[str, float]:
    """``--direction NAME=AMOUNT`` (repeatable) as {name: amount}; a plain sentence for anything else."""
    out: dict[str, float] = {}
    for pair in pairs or []:
        name, sep, amount = pair.rpartition("=")
        try:
            value = float(amount)
        except ValueError:
            value = None
        if not sep or not name.strip() or value is None:
            raise ValueError(f"--direction takes NAME=AMOUNT (e.g. --direction age=1.5, amounts in std), not '{pair}'.")
        out[name.strip()] = out.get(name.strip(), 0.0) + value
    return out


def edit(args: argparse.Namespace, registry: Registry, executor: Executor) -> int:
    """The Projection tab's Edit panel: a photo (projected first, tuned for faces) or a saved latent, moved along
    directions; writes the edited picture, its replayable .npz and optional strips."""
    from core.edit import edit as edit_latent
    from core.edit import strip, unconditioned_effects
    from core.export import load_latent
    from core.user_directions import directions_for

    amounts = _amounts(args.direction)
    if not amounts and not args.strip:
        raise ValueError("Nothing to do: give --direction NAME=AMOUNT (repeatable) and/or --strip NAME.")
    both = [k for k in args.keep_fixed or [] if k in amounts]
    if both:
        raise ValueError(f"'{both[0]}' is moved by --direction, so it cannot also be kept fixed (--keep-fixed).")
    src = Path(args.input).expanduser()
    if not src.is_file():
        raise ValueError(f"{args.input} does not exist (give a photo, or a latent .npz saved by the app or `project`).")
    descriptor, decoder = None, None
    if src.suffix.lower() == ".npz":
        latent, info = load_latent(src)
        if args.model and info.get("model") and args.model != info["model"]:
            raise ValueError(f"{src.name} is a latent of {info['model']}, not of {args.model}; edit it with "
                             f"--model {info['model']} (or leave --model out).")
        name = args.model or resolve_model(registry, info.get("model") or "")
        handle = registry.handle(name, _load(registry, name))
        model, space, latent = handle.model, info.get("space") or handle.model.edit_space(), torch_latent(latent)
        if info.get("decoder"):
            print("note: the .npz holds the latent only; it is drawn by the model itself, not by the decoder tuned to "
                  "the photo (edit the photo itself to use a tuned decoder).", file=sys.stderr)
    else:
        if not args.model:
            raise ValueError("Give --model to edit a photo (it is projected into that model first).")
        from core.faces.identity import default_identity
        from core.photo_to_latent import project_and_tune
        from core.projection import ProjectionConfig

        handle = registry.handle(args.model, _load(registry, args.model))
        inp, target = _target(handle, str(src), not args.no_align)
        model = handle.model.at_size(*inp.shape)
        space = model.check_space(args.space or model.edit_space())
        cfg = ProjectionConfig.for_model(model, space, preview_every=0, steps=args.steps)
        projected, last = _progress(project_and_tune(model, target, cfg, args.tune_steps, executor=executor), cfg.steps,
                                    src.name)
        latent = projected.latent[:1]
        decoder = last.model if last.stage == "tuning" and last.model is not None else None
        if inp.reference is not None:
            descriptor = default_identity().descriptors([inp.reference])[0]
    dirs = directions_for(handle.name, model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    layers = args.layers if model.spaces[model.check_space(space)].per_layer else (args.layers if args.layers != "all" else None)
    wrote = []
    kw = {"layers": layers, "keep_fixed": args.keep_fixed or [], "decoder": decoder}
    if amounts:
        result = edit_latent(model, space, latent, dirs, amounts, photo_descriptor=descriptor, model_name=handle.name, **kw)
        result.image.save(out / "edited.png")
        result.save(out / "edited.npz")
        wrote += ["edited.png", "edited.npz"]
        print(result.caption())
        if args.keep_fixed:
            free = unconditioned_effects(model, space, latent, dirs, amounts, args.keep_fixed, layers)
            for k, after in free.items():
                before, now = result.effects[k]
                print(f"{k} kept fixed: score moved {now - before:+.2f} (without keeping it fixed: {after - before:+.2f}).")
    for name in args.strip or []:
        st = strip(model, space, latent, dirs, name, layers=layers,
                   keep_fixed=[k for k in args.keep_fixed or [] if k != name], decoder=decoder)
        file = "strip_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in name) + ".png"
        st.image.save(out / file)
        wrote.append(f"{file} ({name} at {', '.join(f'{a:+g}' for a in st.amounts)} std)")
    print(f"Wrote {out}/{', '.join(wrote)}")
    return 0


def torch_latent(array):
    import torch

    return torch.as_tensor(array, dtype=torch.float32)
