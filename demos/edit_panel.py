"""The Projection tab's Edit panel and its "Teach a direction" box (wiring only; the work is core.edit and core.teach).

After a projection, the session keeps what an edit needs (:class:`Projected`: the latent, the decoder that drew it,
the tuned copy for faces, and the photo's face crop for identity distances); the panel moves that latent along the
model's directions, the principal components and the session's own taught ones (``demos.taught``), and draws it with
the same decoder. Teaching lives here too, beside the sliders it feeds, and uses the tab's model choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from demos.common import HEAVY, AppContext
from demos.taught import session_directions
from demos.wiring import bind, bind_settings

SLOTS = 3  # direction + amount pairs shown (most edits combine one to three directions)
# The direction lists are filled per session after a projection; they take typed names too (an API client's), which
# core.edit checks and refuses in a sentence naming the available ones.
LAYER_CHOICES = ["all", "coarse", "middle", "fine", "coarse+middle", "middle+fine"]
PROJECTED = ("edit", "projected")  # session cache key


@dataclass
class Projected:
    """The session's latest projection, as an edit needs it."""

    name: str  # registry name
    model: Any  # the model (at the photo's size for a VAE)
    decoder: Any  # what drew the result: the tuned copy for faces, else the model
    space: str
    latent: Any  # (1, *shape) on the CPU
    reference: Any = None  # aligned faces: the photo's crop identity is measured on
    decode_kwargs: dict = field(default_factory=dict)
    descriptor: Any = None  # the reference's dlib descriptor, computed on the first edit


def remember_projection(ctx: AppContext, request, handle, inp, projected, tuned=None) -> None:
    """Called by the Projection tab when a projection finishes (or stops): the Edit panel works on this."""
    m = handle.model
    decoder = tuned.model if tuned is not None and tuned.model is not None else m
    ctx.session_cache(request)[PROJECTED] = Projected(
        handle.name, m, decoder, projected.space, projected.latent[:1].detach().cpu(), inp.reference,
        m.decode_options(None, inverted=True))


def _projected(ctx: AppContext, request) -> Projected:
    found = ctx.session_cache(request).get(PROJECTED)
    if found is None:
        raise gr.Error("Project a photo first (press Project above); the edit works on its latent.")
    return found


def available_directions(ctx: AppContext, request, name: str, model) -> list:
    """The model's directions (built-in, the operator's, principal components), then this session's taught ones."""
    from core.user_directions import directions_for

    return session_directions(ctx, request).merged(name, directions_for(name, model))


# ----- choices --------------------------------------------------------------------------------------------------
def edit_choices(ctx: AppContext, request: gr.Request = None) -> tuple:
    """(panel note, SLOTS direction lists, keep-fixed list, strip list, layer choice) for the latest projection."""
    found = ctx.session_cache(request).get(PROJECTED)
    if found is None:
        none = gr.update(choices=[], value=None)
        return ("Project a photo first; then move it along directions here.", *[none] * SLOTS,
                gr.update(choices=[], value=[]), none, gr.update(visible=False))
    dirs = available_directions(ctx, request, found.name, found.model)
    names = [d.name for d in dirs]
    per_layer = bool(found.model.spaces[found.space].per_layer)
    firsts = [n for n in names if not n.startswith("PC")] + [n for n in names if n.startswith("PC")]
    slots = [gr.update(choices=names, value=firsts[i] if i < len(firsts) else None) for i in range(SLOTS)]
    note = (f"Editing the latest projection ({found.model.card.title}, space **{found.space}**): "
            f"{len(names)} directions, {len(session_directions(ctx, request).directions(found.name))} taught in this "
            "session. Amounts are in standard deviations of the data along each direction.")
    return (note, *slots, gr.update(choices=names, value=[]), gr.update(choices=names, value=firsts[0] if firsts else None),
            gr.update(visible=per_layer))


# ----- editing --------------------------------------------------------------------------------------------------
@dataclass
class EditSettings:
    """The Edit panel's inputs by name (``demos.wiring.bind_settings``)."""

    direction_1: str | None = None
    amount_1: float | None = 0
    direction_2: str | None = None
    amount_2: float | None = 0
    direction_3: str | None = None
    amount_3: float | None = 0
    layers: str | None = "all"
    keep_fixed: list[str] | None = None
    strip_direction: str | None = None

    def amounts(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, amount in ((self.direction_1, self.amount_1), (self.direction_2, self.amount_2),
                             (self.direction_3, self.amount_3)):
            if not name or not amount:
                continue
            if name in out:
                raise gr.Error(f"'{name}' is chosen twice; choose each direction once (or add the amounts).")
            out[name] = float(amount)
        return out


def _layers(found: Projected, s: EditSettings) -> str | None:
    return (s.layers or "all") if found.model.spaces[found.space].per_layer else None


def _descriptor(found: Projected):
    if found.reference is not None and found.descriptor is None:
        from core.faces.identity import default_identity

        found.descriptor = default_identity().descriptors([found.reference])[0]
    return found.descriptor


def edit_projection(ctx: AppContext, s: EditSettings, request: gr.Request = None):
    """(edited picture, caption, downloads): the latest projection moved by the chosen amounts, drawn by its decoder."""
    from core.edit import edit, unconditioned_effects

    found = _projected(ctx, request)
    dirs = available_directions(ctx, request, found.name, found.model)
    amounts, kept = s.amounts(), list(s.keep_fixed or [])
    both = [k for k in kept if k in amounts]
    if both:
        raise gr.Error(f"'{both[0]}' is being changed, so it cannot also be kept fixed; keep another direction fixed.")
    try:
        result = edit(found.model, found.space, found.latent, dirs, amounts, layers=_layers(found, s), keep_fixed=kept,
                      decoder=found.decoder, decode_kwargs=found.decode_kwargs, photo_descriptor=_descriptor(found),
                      model_name=found.name)
        free = unconditioned_effects(found.model, found.space, found.latent, dirs, amounts, kept, _layers(found, s)) \
            if kept and result.moves else {}
    except ValueError as e:
        raise gr.Error(str(e)) from e
    text = result.caption()
    for name, after in free.items():
        before, now = result.effects[name]
        text += (f" Keeping **{name}** fixed: its score moved {now - before:+.2f} (without keeping it fixed: "
                 f"{after - before:+.2f}).")
    if result.identity_distance is not None and result.identity_unedited is not None:
        text += f" Unedited reconstruction: {result.identity_unedited:.2f} to the photo (below 0.6: the same person)."
    for w in result.warnings:
        text += f"\n\n⚠ {w}"
    picture = ctx.save_image(request, result.image, "edited", min_side=256)
    png = ctx.save_image(request, result.image, "edited_full")
    npz = result.save(ctx.new_file(request, ".npz", "edited_latent"))
    return picture, text, [str(npz), png]


def edit_strip(ctx: AppContext, s: EditSettings, request: gr.Request = None):
    """(strip picture, caption): one direction from -2 to +2 std, with the panel's layers and kept directions."""
    from core.edit import strip

    found = _projected(ctx, request)
    if not s.strip_direction:
        raise gr.Error("Choose the direction for the strip.")
    dirs = available_directions(ctx, request, found.name, found.model)
    try:
        st = strip(found.model, found.space, found.latent, dirs, s.strip_direction, layers=_layers(found, s),
                   keep_fixed=[k for k in (s.keep_fixed or []) if k != s.strip_direction], decoder=found.decoder,
                   decode_kwargs=found.decode_kwargs)
    except ValueError as e:
        raise gr.Error(str(e)) from e
    path = ctx.save_image(request, st.image, "strip", min_side=128)
    return path, (f"**{st.move.describe().split(' +')[0]}** at {', '.join(f'{a:+g}' for a in st.amounts)} std, left to "
                  f"right (0 = the projection).")


# ----- teaching -------------------------------------------------------------------------------------------------
@dataclass
class TeachSettings:
    model: str | None
    with_photos: list[str] | None = None
    without_photos: list[str] | None = None
    name: str | None = ""


def teach_direction(ctx: AppContext, s: TeachSettings, request: gr.Request = None, progress=gr.Progress()) -> str:
    """Fit a direction from the two uploaded sets (the chosen model's encoder, or a short projection) and keep it for
    this session; returns its held-out accuracy and verdict."""
    from core.tags import FACES
    from core.teach import check_sides, encoder_latents, teach_from_images
    from core.user_directions import directions_for

    if not s.model:
        raise gr.Error("Choose a model first.")
    with_photos, without_photos = list(s.with_photos or []), list(s.without_photos or [])
    for p in with_photos + without_photos:
        ctx.track_upload(request, p)  # someone else's file is refused; these are deleted with the session
    m = ctx.model(s.model)
    try:
        check_sides(len(with_photos), len(without_photos))
        space = m.edit_space()
        per_layer = bool(m.spaces[space].per_layer)
        to_latent = encoder_latents(m, space, align_faces=FACES in ctx.registry.entry(s.model).tags)
        taught = teach_from_images(with_photos, without_photos, s.name or "", to_latent, space=space, per_layer=per_layer,
                                   progress=lambda i, n, label: progress(i / max(n, 1), desc=f"{label} ({i}/{n})"))
        builtin = [d.name for d in directions_for(s.model, m)]
        kept = session_directions(ctx, request).add(s.model, taught, builtin)
    except ValueError as e:
        raise gr.Error(str(e)) from e
    notes = "".join(f"\n\n{n}" for n in taught.notes)
    renamed = f" Listed as **{kept.name}** (a direction of the model has this name)." if kept.name != taught.direction.name else ""
    return (f"**{taught.describe()}**.{renamed} It is offered now in the Edit sliders above and in Family's \"Another "
            f"direction\" for {m.card.title}, for this session only (it is deleted with the session).{notes}")


# ----- the panel ------------------------------------------------------------------------------------------------
def build(ctx: AppContext, model: gr.Dropdown, finished_event) -> None:
    """The Edit panel and the Teach box, under the Projection tab's outputs; ``finished_event``: the projection's
    event, after which the direction lists are refreshed."""
    with gr.Accordion("Edit the projection", open=True, elem_id="edit_panel"):
        note = gr.Markdown("Project a photo first; then move it along directions here.", elem_id="edit_note")
        with gr.Row():
            with gr.Column(scale=1):
                slots = []
                for i in range(1, SLOTS + 1):
                    with gr.Row():
                        d = gr.Dropdown([], value=None, allow_custom_value=True, label=f"Direction {i}", elem_id=f"edit_direction_{i}", scale=2)
                        a = gr.Slider(-3, 3, value=0, step=0.1, label="Amount (std)", elem_id=f"edit_amount_{i}", scale=3)
                    slots += [d, a]
                layers = gr.Radio(LAYER_CHOICES, value="all", label="Layers (W+: coarse = pose, shape; middle = features; "
                                  "fine = colour)", visible=False, elem_id="edit_layers")
                keep = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True, label="Keep fixed while editing (conditional edit)",
                                   info="The moved directions lose their component along these, so a correlated "
                                        "attribute is not dragged along; the caption measures it.", elem_id="edit_keep")
                run = gr.Button("Edit", variant="primary", elem_id="edit_run")
                with gr.Row():
                    strip_dir = gr.Dropdown([], value=None, allow_custom_value=True, label="Strip: one direction at −2…+2 std", elem_id="edit_strip_direction",
                                            scale=3)
                    strip_run = gr.Button("Strip", elem_id="edit_strip_run", scale=1)
            with gr.Column(scale=1):
                edited = gr.Image(label="Edited", format="png", interactive=False, height=300, elem_id="edit_image")
                caption = gr.Markdown("", elem_id="edit_caption")
                files = gr.File(label="Downloads (edited latent .npz, edited .png)", file_count="multiple",
                                interactive=False, elem_id="edit_files")
        strip_img = gr.Image(label="Strip", format="png", interactive=False, elem_id="edit_strip")
        strip_caption = gr.Markdown("", elem_id="edit_strip_caption")
    with gr.Accordion("Teach a direction from examples", open=False, elem_id="teach_panel"):
        gr.Markdown("Upload photos **with** an attribute and **without** it (at least 5 each, 20 or more is better); the "
                    "chosen model puts each into its latent space, a linear classifier finds the direction, and its "
                    "accuracy on held-out photos says how far to trust it. Private to this session.")
        with gr.Row():
            with_photos = gr.File(label="With (e.g. smiling)", file_count="multiple", file_types=["image"],
                                  elem_id="teach_with")
            without_photos = gr.File(label="Without (e.g. neutral)", file_count="multiple", file_types=["image"],
                                     elem_id="teach_without")
        with gr.Row():
            name = gr.Textbox(label="Name", placeholder="smile", elem_id="teach_name", scale=3)
            teach = gr.Button("Teach", variant="primary", elem_id="teach_run", scale=1)
        taught = gr.Markdown("", elem_id="teach_result")

    lists = [note, slots[0], slots[2], slots[4], keep, strip_dir, layers]
    finished_event.then(bind(edit_choices, ctx), None, lists, api_name="edit_directions", show_progress="hidden")
    fields = {"direction_1": slots[0], "amount_1": slots[1], "direction_2": slots[2], "amount_2": slots[3],
              "direction_3": slots[4], "amount_3": slots[5], "layers": layers, "keep_fixed": keep,
              "strip_direction": strip_dir}
    run.click(*bind_settings(edit_projection, ctx, EditSettings, fields), [edited, caption, files], api_name="edit",
              concurrency_id=HEAVY)
    strip_run.click(*bind_settings(edit_strip, ctx, EditSettings, fields), [strip_img, strip_caption], api_name="edit_strip",
                    concurrency_id=HEAVY)
    teach_fields = {"model": model, "with_photos": with_photos, "without_photos": without_photos, "name": name}
    teach.click(*bind_settings(teach_direction, ctx, TeachSettings, teach_fields), taught, api_name="teach",
                show_progress_on=[taught], concurrency_id=HEAVY).then(
        bind(edit_choices, ctx), None, lists, api_name="edit_directions_after_teach", api_visibility="private",
        show_progress="hidden")
