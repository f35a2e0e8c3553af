"""Family tab: two parents' photos -> aligned faces -> projections -> children (wiring only; the work is core.family)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from core.tags import FACES
from demos import face_picker
from demos.common import (
    DECODE_STEPS,
    HEAVY,
    AppContext,
    ImageUpload,
    caption,
    decode_steps_slider,
    decode_steps_view,
    model_panel,
)
from demos.face_note import directions_note, download_photo_model, face_model_note
from demos.face_numbers import set_parent_face
from demos.wiring import bind, bind_settings, request_stop, stop_flag

GROUPS = ("coarse", "middle", "fine")
GROUP_HELP = {"coarse": "face shape, pose", "middle": "features, hair", "fine": "colour, skin texture"}
PARENTS = ("father", "mother")


@dataclass
class FamilySettings:
    """The tab's inputs by name (``demos.wiring.bind_settings``); defaults as the tab opens. Projecting the parents
    reads the model, photos, face numbers (1 = the largest) and steps; children and the morph read the rest."""

    model: str | None
    father: str | None = None
    mother: str | None = None
    steps: float = 100  # a marked copy of core.family.PROJECTION_STEPS (not imported: the page is served before torch)
    gene: float = 0.5
    coarse: str = "blend"  # per-layer dominance: "blend", "father" or "mother"
    middle: str = "blend"
    fine: str = "blend"
    age: float | None = 0
    gender: float | None = 0
    extra: str | None = None  # another direction's name
    extra_amount: float | None = 0
    variation: float | None = 0.4  # a marked copy of core.children.VARIATION
    seed: float | None = 0
    count: float | None = 4
    which: float | None = 0  # the morph's child (0 = first)
    father_face: float = 1
    mother_face: float = 1
    decode_steps: float | None = DECODE_STEPS  # a diffusion model's sampling steps (one-shot decoders: none)

    def child_settings(self):
        """As ``core.family.ChildSettings``; ``core.family.check_settings`` judges them (one place for UI, API, CLI)."""
        from core.family import ChildSettings

        wanted = {"age": float(self.age or 0), "gender": float(self.gender or 0)}
        if self.extra:
            wanted[self.extra] = float(self.extra_amount or 0)
        return ChildSettings(gene_weight=float(self.gene), dominance=dict(zip(GROUPS, (self.coarse, self.middle, self.fine),
                                                                              strict=True)),
                             attributes={k: v for k, v in wanted.items() if v}, variation=float(self.variation or 0),
                             seed=int(self.seed or 0), children=self.count if self.count is not None else 1)


# ----- the session's Family -------------------------------------------------------------------------------------
def family_for(ctx: AppContext, name: str | None, request: gr.Request | None):
    """This session's :class:`core.family.Family` for the chosen model (one per model), or a gr.Error."""
    from core.family import Family
    from demos.taught import session_directions

    m = ctx.model(name)
    cache = ctx.session_cache(request)
    if ("family", name) not in cache:
        try:
            cache[("family", name)] = Family(ctx.registry.handle(name, m), executor=ctx.executor,
                                           session_directions=session_directions(ctx, request))
        except ValueError as e:  # not a face model
            raise gr.Error(str(e)) from e
    return cache[("family", name)]


def set_parents(ctx: AppContext, name, fpath, mpath, fface, mface, request):
    """Both parents aligned (each on its own) on their chosen faces (1 = the largest, as the picker numbers them); a
    gr.Error only when a photo was given and none could be used."""
    fam = family_for(ctx, name, request)
    for who, path, face in (("father", fpath, fface), ("mother", mpath, mface)):
        ctx.track_upload(request, path)
        if set_parent_face(fam, who, path, face).error and path:
            _drop_if_unreadable(ctx, path)
    errors = [p for p in fam.parents.values() if p.error]
    if errors and all(p.crop is None for p in fam.parents.values()):
        raise gr.Error(f"{errors[0].who.capitalize()}'s photo: {errors[0].error}")
    return fam


def _drop_if_unreadable(ctx: AppContext, path: str) -> None:
    """A refused upload that is not an image at all is deleted at once, as the other tabs do (a photo with no face
    found, or a face number out of range, stays: another face can still be chosen)."""
    from core.image_input import ImageInputError, load_image

    try:
        load_image(path, channels=3, min_side=16)
    except ImageInputError:
        ctx.files.drop(path)


def parent_notes(fam, who: tuple[str, ...] = PARENTS) -> list[str]:
    notes = []
    for p in fam.parents.values():
        if p.who in who:
            notes += [f"{p.who.capitalize()}'s photo: {p.error}"] if p.error else [f"{p.who.capitalize()}: {w}" for w in p.warnings]
    return notes


def ready_parents(ctx: AppContext, name, fpath, mpath, fface, mface, request):
    """The Family when both parents' photos can be used; otherwise one gr.Error, before any projection."""
    fam = set_parents(ctx, name, fpath, mpath, fface, mface, request)
    for p in fam.parents.values():
        if p.error:
            raise gr.Error(f"{p.who.capitalize()}'s photo: {p.error}")
        if p.crop is None:
            raise gr.Error(f"Children need both parents: upload the {p.who}'s photo first.")
    return fam


# ----- handlers (top level: tests call them directly with an AppContext) ------------------------------------------
def align_parents(ctx: AppContext, name: str, fpath: str | None, mpath: str | None, fface: float = 1, mface: float = 1,
                  request: gr.Request = None, notify: tuple[str, ...] = PARENTS):
    """(father crop, mother crop, notes, father's faces, mother's faces): each parent's crop even if the other failed.
    Face numbers count from 1 (the largest); ``notify``: whose notes are also said as warnings (a parent's photo is
    warned about once, when it arrives)."""
    fam = set_parents(ctx, name, fpath, mpath, fface, mface, request)
    for n in parent_notes(fam, notify):
        gr.Warning(n)
    crops = [ctx.save_image(request, p.crop, f"{p.who}_crop", min_side=256) if p.crop is not None else None
             for p in fam.parents.values()]
    faces = [face_picker.view(ctx, request, p.digest, len(p.faces), lambda p=p: p.faces) for p in fam.parents.values()]
    return crops[0], crops[1], "\n".join(f"- {n}" for n in parent_notes(fam)), *faces


def align_new_father(ctx: AppContext, name: str, fpath: str | None, mpath: str | None, fface: float = 1, mface: float = 1,
                     request: gr.Request = None):
    """Align both parents after a new father's photo (warnings about his photo only)."""
    return align_parents(ctx, name, fpath, mpath, fface, mface, request, notify=("father",))


def align_new_mother(ctx: AppContext, name: str, fpath: str | None, mpath: str | None, fface: float = 1, mface: float = 1,
                     request: gr.Request = None):
    """Align both parents after a new mother's photo (warnings about her photo only)."""
    return align_parents(ctx, name, fpath, mpath, fface, mface, request, notify=("mother",))


def align_chosen_face(ctx: AppContext, name: str, fpath: str | None, mpath: str | None, fface: float = 1,
                      mface: float = 1, request: gr.Request = None):
    """Align both parents after a face was chosen in a picker (its photo was already warned about)."""
    return align_parents(ctx, name, fpath, mpath, fface, mface, request, notify=())


def project_parents(ctx: AppContext, s: FamilySettings, request: gr.Request = None, progress=gr.Progress()):
    """Stream (father's projection, mother's projection, status); Stop ends with the partial projections."""
    fam = yield from projected(ctx, s, request, progress)
    yield *parent_views(ctx, request, fam), projection_status(fam)


def projected(ctx: AppContext, s: FamilySettings, request, progress):
    """Generator: aligns and projects what is missing (one batch), yielding progress rows; returns the Family, which
    draws with the settings' diffusion steps (diffusion models)."""
    fam = set_parents(ctx, s.model, s.father, s.mother, s.father_face, s.mother_face, request)
    fam.set_decode_steps(s.decode_steps)  # a bad step count is refused before any work
    stop = stop_flag(ctx, request, "family")
    try:
        for ev in fam.project(s.steps, should_stop=stop.is_set):
            what = "projecting the parents" if ev.stage == "projecting" else "tuning the decoder to the parents' photos"
            progress(ev.step / ev.steps, desc=f"{what}: step {ev.step}/{ev.steps}, PSNR {ev.psnr:.1f} dB")
            if not ev.done and ev.step % max(1, ev.steps // 10) == 0:
                yield gr.update(), gr.update(), f"{what.capitalize()}: step {ev.step}/{ev.steps}, PSNR {ev.psnr:.1f} dB"
    except ValueError as e:
        raise gr.Error(str(e)) from e
    return fam


def parent_views(ctx: AppContext, request, fam) -> list:
    return [ctx.save_image(request, p.reconstruction, f"{p.who}_projection", min_side=256) if p.reconstruction else None
            for p in fam.parents.values()]


def projection_status(fam) -> str:
    from core.faces.identity import verdict

    done = [p for p in fam.parents.values() if p.latent is not None]
    parts = [f"{p.who}: PSNR {p.psnr:.1f} dB, {verdict(p.identity)}" for p in done]
    who = "Both parents" if len(done) == 2 else " and ".join(p.who.capitalize() for p in done) or "Nothing"
    loss = f"; {done[0].loss_name} loss" if done else ""
    text = f"{who} projected into **{fam.space}** of {fam.model.card.title} ({'; '.join(parts)}{loss})."
    if any(p.tuned for p in done):
        text += (" The decoder was then tuned to these two photos (pivotal tuning: a private copy, kept only for this "
                 "session), so parents and children are drawn by it; PSNR is measured inside the face.")
    if fam.colour is not None and len(done) == 2:
        shown = "; ".join(f"{p.who} {p.identity_shown:.2f}" for p in done if p.identity_shown is not None)
        text += (" Both photos were fitted with their face colours matched to each other (so children blend into one "
                 "face); the pictures get each photo's colours back through one global colour map. Identity is measured "
                 f"on the model's own drawing; with the colours put back it is {shown}.")
    stopped = [p for p in done if p.stopped]
    if stopped:
        text = (f"**Stopped at step {stopped[0].steps}**: partial projections are shown; press Project parents to finish. "
                + text)
    return "\n\n".join([text, *(f"- {n}" for n in parent_notes(fam) if "photo:" in n)])


def make_children(ctx: AppContext, s: FamilySettings, request: gr.Request = None, progress=gr.Progress()):
    """Stream (children gallery, files, status, father's projection, mother's projection)."""
    settings = _refuse_early(ctx, s, request)
    fam = yield from _as_children_rows(projected(ctx, s, request, progress))
    try:
        kids = fam.children(settings)
    except ValueError as e:
        raise gr.Error(str(e)) from e
    for w in kids.warnings:
        gr.Warning(w)
    yield *children_outputs(ctx, request, s.model, fam, kids), *parent_views(ctx, request, fam)


def check_children(ctx: AppContext, s: FamilySettings, request: gr.Request = None) -> None:
    """Make children's (and the morph's) refusals, said before its event starts: a refusal then comes as one message,
    with no error marks on the outputs and nothing computed."""
    _refuse_early(ctx, s, request)


def _refuse_early(ctx: AppContext, s: FamilySettings, request):
    """The child settings, once they and both parents' photos are usable; else one gr.Error before any projection."""
    settings = s.child_settings()
    fam = family_for(ctx, s.model, request)
    try:
        fam.check(settings)  # a bad setting costs nothing
    except ValueError as e:
        raise gr.Error(str(e)) from e
    ready_parents(ctx, s.model, s.father, s.mother, s.father_face, s.mother_face, request)  # no face, or a parent missing
    return settings


def children_outputs(ctx: AppContext, request, name: str, fam, kids) -> tuple:
    """(gallery, files, status) of a Children result: each child's .png and .npz, identity distances in a table."""
    from core.export import save_latent
    from core.family import DISCLAIMER

    s = kids.settings
    gallery, files = [], []
    for i, (img, z, (to_f, to_m)) in enumerate(zip(kids.images, kids.latents, kids.identity, strict=True)):
        files.append(ctx.save_image(request, img, f"child{i}"))
        files.append(str(save_latent(
            ctx.new_file(request, ".npz", f"child{i}"), z[None], model=name, space=kids.space, gene_weight=s.gene_weight,
            dominance=s.dominance, attributes=s.attributes, variation=s.variation, seed=s.seed, index=i,
            identity_to_father=round(to_f, 4), identity_to_mother=round(to_m, 4), parents_distance=round(kids.parents_distance, 4),
            licence=fam.model.card.licence, note=DISCLAIMER)))
        gallery.append((ctx.save_image(request, img, f"child{i}_view", min_side=256), None))  # captions go below, off the faces
    count = f"{len(kids.images)} child" + ("ren" if len(kids.images) != 1 else "")
    rows = "\n".join(f"| {i} | {f:.2f} | {m:.2f} |" for i, (f, m) in enumerate(kids.identity))
    table = (f"| child (left to right) | identity distance to father | to mother |\n|---|---|---|\n{rows}\n\n"
             f"The parents are {kids.parents_distance:.2f} apart; below 0.6 reads as the same person.")
    if kids.colour_weight is not None:
        table += (f" Distances are of the model's own drawings; the children are shown with the parents' skin tones "
                  f"blended {1 - kids.colour_weight:.0%} father / {kids.colour_weight:.0%} mother (one global colour map).")
    notes = "".join(f"\n- {w}" for w in kids.warnings)
    return gallery, files, f"{count}.{notes}\n\n{table}\n\n_{caption(ctx, name)}. {DISCLAIMER}_"


def morph_video(ctx: AppContext, s: FamilySettings, request: gr.Request = None, progress=gr.Progress()) -> str:
    """The father -> child -> mother MP4 of child ``s.which``."""
    from core.export import save_mp4

    settings = _refuse_early(ctx, s, request)
    fam = _family_of(projected(ctx, s, request, progress))
    try:
        frames = fam.morph(s.which if s.which is not None else 0, settings, 32)
    except ValueError as e:
        raise gr.Error(str(e)) from e
    return str(save_mp4(frames, ctx.new_file(request, ".mp4", "morph"), fps=12, boomerang=True))


def _as_children_rows(gen):
    """Relay projection progress rows as rows of the children's outputs; return the generator's Family."""
    while True:
        try:
            row = next(gen)
        except StopIteration as done:
            return done.value
        yield gr.update(), gr.update(), row[2], gr.update(), gr.update()


def _family_of(gen):
    """Run the projection generator to its end (no progress rows: the morph has one output) and return its Family."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def stop_family(ctx: AppContext, request: gr.Request = None) -> None:
    request_stop(ctx, request, "family", ("family_project", "family_children"))


def first_face() -> int:
    """A new photo starts from its largest face (number 1)."""
    return 1


def model_view(ctx: AppContext, name: str | None):
    """(dominance group, built-in model note, download button) for the chosen model: dominance only with layers."""
    layered = False
    if name and ctx.registry.status(name) in ("ready", "loaded"):
        m = ctx.model(name)
        layered = bool(m.layer_groups(m.edit_space()))
    return gr.update(visible=layered), *face_model_note(ctx, name)


# ----- layout and wiring ------------------------------------------------------------------------------------------
def _layout(ctx: AppContext) -> SimpleNamespace:
    """The tab's components, by name."""
    from core.family import DISCLAIMER

    gr.Markdown(f"Upload a photo of each parent. Faces are found and aligned, projected into a face model, then blended. _{DISCLAIMER}_")
    with gr.Row():
        with gr.Column(scale=1):
            model, _, _ = model_panel(ctx, "family", tag=FACES, label="Face model")
            with gr.Row(equal_height=False):
                builtin_note = gr.Markdown("", visible=False, elem_id="family_builtin_note")
                get_photo_model = gr.Button("Download", visible=False, size="sm", scale=0, min_width=140, elem_id="family_photo_download")
            with gr.Row():
                father = ImageUpload(label="Father", type="filepath", elem_id="family_father")
                mother = ImageUpload(label="Mother", type="filepath", elem_id="family_mother")
            with gr.Row():
                father_faces = face_picker.gallery("family_father_faces", "Faces in the father's photo: click to choose")
                mother_faces = face_picker.gallery("family_mother_faces", "Faces in the mother's photo: click to choose")
            father_face = face_picker.number("family_father_face")
            mother_face = face_picker.number("family_mother_face")
            with gr.Row():
                father_crop = gr.Image(label="Father, aligned", format="png", interactive=False, elem_id="family_father_crop")
                mother_crop = gr.Image(label="Mother, aligned", format="png", interactive=False, elem_id="family_mother_crop")
            align_note = gr.Markdown("", elem_id="family_align_note")
            # value: a marked copy of core.family.PROJECTION_STEPS (not imported: the page is served before torch loads)
            steps = gr.Slider(1, ctx.max_steps, value=100, step=1, label="Projection steps", elem_id="family_steps")
            decode_steps = decode_steps_slider(ctx, "family")
            with gr.Row():
                project_btn = gr.Button("Project parents", variant="primary", elem_id="family_project")
                stop = gr.Button("Stop", elem_id="family_stop")
            with gr.Row():
                father_proj = gr.Image(label="Father, projected", format="png", interactive=False, elem_id="family_father_proj")
                mother_proj = gr.Image(label="Mother, projected", format="png", interactive=False, elem_id="family_mother_proj")
        with gr.Column(scale=1):
            gene = gr.Slider(0, 1, value=0.5, step=0.01, label="Genes: father ← → mother", elem_id="family_gene")
            with gr.Group(visible=False) as dominance_group:  # shown for models with layers (model_view)
                gr.Markdown("Per-layer dominance (the model's layers, coarse to fine)")
                dominance = [gr.Radio(["blend", "father", "mother"], value="blend", label=f"{g} layers ({GROUP_HELP[g]})",
                                      elem_id=f"family_dom_{g}") for g in GROUPS]
            age = gr.Slider(-3, 3, value=0, step=0.1, label="Age (younger ← → older, in std of the training data)", elem_id="family_age")
            gender = gr.Slider(-3, 3, value=0, step=0.1, label="Gender (← → along the model's gender direction)", elem_id="family_gender")
            with gr.Row():
                extra = gr.Dropdown([], value=None, label="Another direction", allow_custom_value=True, elem_id="family_extra")
                extra_amount = gr.Slider(-3, 3, value=0, step=0.1, label="Amount (std)", elem_id="family_extra_amount")
            directions_note = gr.Markdown("", elem_id="family_directions")
            # value: a marked copy of core.children.VARIATION (not imported: the page is served before torch loads)
            variation = gr.Slider(0, 1, value=0.4, step=0.01, label="Variation between children", elem_id="family_variation",
                                  info="Each child inherits every trait from one parent or the other, so siblings differ "
                                       "even at 0. This adds new traits of its own (a mutation), in the model's "
                                       "population standard deviations.")
            with gr.Row():
                seed = gr.Number(0, precision=0, label="Seed", elem_id="family_seed")
                count = gr.Slider(1, 12, value=4, step=1, label="Children", elem_id="family_count")
            generate = gr.Button("Make children", variant="primary", elem_id="family_generate")
            children = gr.Gallery(label="Children", columns=4, format="png", height="auto", object_fit="contain",
                                  elem_id="family_children")
            status = gr.Markdown("", elem_id="family_status")  # the children's table sits beside them
            files = gr.File(label="Downloads (each child .png + its latent .npz)", file_count="multiple", interactive=False,
                            elem_id="family_files")
            with gr.Row():
                which = gr.Number(0, precision=0, label="Morph child # (0 = first)", elem_id="family_morph_index")
                morph_btn = gr.Button("Morph father → child → mother (MP4)", elem_id="family_morph")
            video = gr.Video(label="Morph", interactive=False, height=320, width=320, elem_id="family_video")

    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("ctx", "DISCLAIMER")})


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    c = _layout(ctx)
    faces = [c.father_face, c.mother_face]
    both = [c.model, c.father, c.mother]
    align_out = [c.father_crop, c.mother_crop, c.align_note, c.father_faces, c.mother_faces]
    child_outputs = [c.children, c.files, c.status, c.father_proj, c.mother_proj]
    # Each event's settings (demos.wiring.bind_settings), in its API order: the children's controls sit between the
    # steps and the face numbers; the morph adds which child.
    parents = {"model": c.model, "father": c.father, "mother": c.mother, "steps": c.steps}
    tail = {"father_face": c.father_face, "mother_face": c.mother_face, "decode_steps": c.decode_steps}
    controls = {"gene": c.gene, **dict(zip(GROUPS, c.dominance, strict=True)), "age": c.age, "gender": c.gender,
                "extra": c.extra, "extra_amount": c.extra_amount, "variation": c.variation, "seed": c.seed, "count": c.count}
    children_settings = {**parents, **controls, **tail}
    morph_settings = {**parents, **controls, "which": c.which, **tail}
    # A new photo starts from its largest face; then both parents are aligned (each on its own), and only the new
    # photo is warned about. A face clicked in a picker re-aligns on it.
    for photo, number, align, api in ((c.father, c.father_face, align_new_father, "family_align"),
                                      (c.mother, c.mother_face, align_new_mother, "family_align_mother")):
        # Both align both parents (they differ only in which photo they warn about): one is on the API page.
        photo.change(first_face, None, number, api_visibility="private").then(
            bind(align, ctx), [*both, *faces], align_out, api_name=api,
            api_visibility="public" if api == "family_align" else "undocumented")
    for gallery, number in ((c.father_faces, c.father_face), (c.mother_faces, c.mother_face)):
        gallery.select(face_picker.picked, None, number, api_visibility="private").then(
            bind(align_chosen_face, ctx), [*both, *faces], align_out, api_visibility="private")
    # Project / Make are stopped through the session's stop flag (partial projections are shown), not cancelled.
    c.project_btn.click(*bind_settings(project_parents, ctx, FamilySettings, {**parents, **tail}),
                        [c.father_proj, c.mother_proj, c.status], api_name="family_project", show_progress_on=[c.status],
                        concurrency_id=HEAVY)
    # A refusal (a photo without a face, a missing parent, a bad setting) comes from a check with no outputs, before the
    # long event: one message, no error marks on the outputs, nothing projected. The handlers check again (API callers).
    for trigger, api in ((c.generate.click, "family_children"),
                         *((s.release, f"family_children_{s.elem_id}") for s in (c.gene, c.age, c.gender, c.extra_amount,
                                                                                 c.variation))):
        trigger(*bind_settings(check_children, ctx, FamilySettings, children_settings), None, api_name=f"{api}_check",
                api_visibility="private", show_progress="hidden").success(
            *bind_settings(make_children, ctx, FamilySettings, children_settings), child_outputs, api_name=api,
            api_visibility="public" if api == "family_children" else "undocumented", concurrency_id=HEAVY)
    mv = c.morph_btn.click(*bind_settings(check_children, ctx, FamilySettings, morph_settings), None,
                           api_name="family_morph_check", api_visibility="private", show_progress="hidden").success(
        *bind_settings(morph_video, ctx, FamilySettings, morph_settings), c.video, api_name="family_morph",
        concurrency_id=HEAVY)
    c.stop.click(bind(stop_family, ctx), None, None, cancels=[mv], api_name="family_stop", api_visibility="private",
                 concurrency_limit=None)
    gr.on([c.model.change, demo.load], bind(directions_note, ctx), c.model, [c.directions_note, c.extra],
          api_name="family_directions", show_progress="hidden")
    gr.on([c.model.change, demo.load], bind(model_view, ctx), c.model, [c.dominance_group, c.builtin_note, c.get_photo_model],
          api_name="family_model_view", show_progress="hidden")
    gr.on([c.model.change, demo.load], bind(decode_steps_view, ctx), c.model, c.decode_steps,
          api_name="family_decode_steps_view", api_visibility="private", show_progress="hidden")
    c.get_photo_model.click(bind(download_photo_model, ctx), None, [c.builtin_note, c.get_photo_model, c.model],
                            api_name="family_photo_download", concurrency_id="download")
