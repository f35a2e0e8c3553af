"""The line face tabs show beside the built-in face model: what it can do, and where photographic results come from."""

from __future__ import annotations

import gradio as gr

from demos.common import AppContext, download_model
from plugins.contract import FACES

PHOTO_MODEL = "stylegan2/ffhq-256"  # the smallest FFHQ StyleGAN: the first download a face tab suggests


def is_builtin_face_model(ctx: AppContext, name: str | None) -> bool:
    """A face model that ships with the app (nothing to download) and works at thumbnail size."""
    if not name or name not in ctx.registry.names(FACES):
        return False
    entry = ctx.registry.entry(name)
    return entry.download is None and entry.card.resolution < 128


def photo_model(ctx: AppContext) -> str | None:
    """The FFHQ model to suggest: PHOTO_MODEL if registered, else any downloadable face model."""
    names = ctx.registry.names(FACES)
    if PHOTO_MODEL in names:
        return PHOTO_MODEL
    return next((n for n in names if ctx.registry.entry(n).download is not None), None)


def face_model_note(ctx: AppContext, name: str | None):
    """(note, download button) updates for the chosen model: shown only for the built-in face model."""
    photo = photo_model(ctx)
    if not is_builtin_face_model(ctx, name) or photo is None:
        return gr.update(value="", visible=False), gr.update(visible=False)
    card = ctx.registry.entry(name).card
    title = ctx.registry.entry(photo).card.title
    missing = ctx.registry.status(photo) == "not downloaded"
    text = (f"**{card.title}** works at {card.resolution} px and learned from about a hundred studio portraits: it gives "
            f"a rough likeness and smooth blends, not photographs. Photographic results need a downloaded FFHQ model"
            + (f" ({title}: press the button)." if missing else f": choose **{title}** above."))
    return gr.update(value=text, visible=True), gr.update(visible=missing, value=f"Download {title}")


def download_photo_model(ctx: AppContext, progress=gr.Progress()):
    """Download the suggested FFHQ model and switch to it: (note, button, dropdown) updates."""
    photo = photo_model(ctx)
    if photo is None:
        raise gr.Error("No downloadable face model is registered.")
    download_model(ctx, photo, progress)
    # (the dropdown's labels refresh on its next focus, as after any download)
    return gr.update(value="", visible=False), gr.update(visible=False), gr.update(value=photo)


def directions_note(ctx: AppContext, name: str | None, request: gr.Request = None):
    """What each of a model's directions is and how well it did on held-out data, and the choices of directions
    beyond age and gender (Family's "Another direction")."""
    from core.user_directions import directions_for

    if not name or ctx.registry.status(name) == "not downloaded":
        return "Age and gender sliders work where the model has those directions.", gr.update(choices=[], value=None)
    from demos.taught import session_directions  # the session's taught directions join the list

    dirs = session_directions(ctx, request).merged(name, directions_for(name, ctx.model(name)))
    if not dirs:
        return ("This model has no attribute directions yet (`python app.py directions` makes them from labelled photos); "
                "the age and gender sliders do nothing."), gr.update(choices=[], value=None)
    lines = []
    for d in dirs:
        if d.method == "pca":
            continue
        towards = f" (positive = {d.metrics['positive_class']})" if "positive_class" in d.metrics else ""
        lines.append(f"- {d.describe()}{towards}")
    pcs = [d for d in dirs if d.method == "pca"]
    if pcs:
        shares = ", ".join(f"{d.metrics['explained_variance_ratio']:.0%}" for d in pcs[:5])
        lines.append(f"- PC1–PC{len(pcs)}: principal components of {pcs[0].source} (GANSpace-style, unsupervised): "
                     f"{shares}… of the variance")
    others = [d.name for d in dirs if d.name not in ("age", "gender")]
    return "Directions of this model:\n" + "\n".join(lines), gr.update(choices=others, value=others[0] if others else None)
