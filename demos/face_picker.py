"""One face picker for every tab that aligns faces (Projection, Interpolation, Family).

A photo with several faces gets one warning (the core's sentence, said once, at upload) and a gallery of its faces,
numbered from 1 = the largest (demos.face_numbers); clicking one re-aligns on it. The thumbnails are saved in the
session's own folder (``AppContext.save_image``), which the app's file guard serves to that session's client only:
images handed to Gradio as pictures would be written to its cache, which nobody owns, and refused (404).

Projection and Interpolation keep their API signatures: the face chosen for an upload is remembered in the session
(:func:`remember`, :func:`chosen`) and read by ``demos.projection.prepare_target``. Family takes the face numbers as
inputs of its events (1-based, like everything the user sees).
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from core.tags import FACES
from core.thumbnails import face_thumbnail
from demos.common import AppContext

THUMB_SIDE = 96  # px: a face in the picker
# Gradio stretched two faces over the whole row, each tile square and taller than the gallery: only the top half of each
# face showed. Tiles of the thumbnails' own size instead (the page's CSS, with demos.interpolation.CSS).
CSS = f".face-picker .grid-container {{ grid-template-columns: repeat(auto-fill, {THUMB_SIDE}px) !important; }}"


def gallery(elem_id: str, label: str) -> gr.Gallery:
    """The picker: hidden until a photo with several faces arrives."""
    return gr.Gallery(label=label, visible=False, columns=6, height=130, allow_preview=False, object_fit="contain",
                      elem_id=elem_id, elem_classes=["face-picker"])


def number(elem_id: str) -> gr.Number:
    """The chosen face, 1 = the largest (hidden; an input of the events that align)."""
    return gr.Number(1, precision=0, visible=False, label="Face number (1 = the largest)", elem_id=elem_id)


def view(ctx: AppContext, request: gr.Request | None, key: str, count: int, thumbnails: Callable[[], list]) -> dict:
    """The picker's update for a photo (``key``) with ``count`` faces, shown only for several; ``thumbnails()``: their
    PIL images, largest first, saved once per photo in the session's own folder."""
    if count < 2:
        return gr.update(value=None, visible=False)
    cache = ctx.session_cache(request)
    if ("face thumbnails", key) not in cache:
        cache[("face thumbnails", key)] = [ctx.save_image(request, f, f"face{i + 1}") for i, f in enumerate(thumbnails())]
    return gr.update(value=cache[("face thumbnails", key)], visible=True)


def picked(evt: gr.SelectData) -> int:
    """The number (1 = the largest) of the face clicked in a picker."""
    return int(evt.index) + 1


# ----- Projection and Interpolation: the choice lives in the session, per upload slot ----------------------------
def detected(ctx: AppContext, request: gr.Request | None, path: str):
    """The faces found in this session's upload (``core.faces.FoundFaces``, detected once per photo), or None when it
    has none or is no image (the tab's own handler says why when it runs)."""
    from core.faces import NoFaceError, find_faces
    from core.image_input import ImageInputError, load_image

    cache = ctx.session_cache(request)
    if ("faces found", path) not in cache:
        ctx.own_input(request, path)
        try:
            cache[("faces found", path)] = find_faces(load_image(path, channels=3, min_side=16))
        except (ImageInputError, NoFaceError):
            cache[("faces found", path)] = None
    return cache[("faces found", path)]


def offered(ctx: AppContext, request: gr.Request | None, path: str | None):
    """The faces the picker offered for this upload (its warning was said then), or None."""
    return ctx.session_cache(request).get(("faces found", path)) if path else None


def remember(ctx: AppContext, request: gr.Request | None, slot: str, path: str, index: int) -> None:
    ctx.session_cache(request)[("face chosen", slot)] = (path, int(index))


def chosen(ctx: AppContext, request: gr.Request | None, slot: str, path: str | None) -> int:
    """The 0-based face chosen in ``slot`` for this upload (0, the largest, until one is clicked)."""
    kept = ctx.session_cache(request).get(("face chosen", slot))
    return kept[1] if kept and kept[0] == path else 0


def offer(ctx: AppContext, name: str | None, path: str | None, align: bool, slot: str, whose: str = "",
          request: gr.Request | None = None) -> dict:
    """The picker's update for an upload in ``slot``: its faces when a face model aligns a photo with several, with
    one warning the first time (a new photo starts from its largest face)."""
    from core.faces import several_faces_note

    hidden = gr.update(value=None, visible=False)
    if not path or not align or not name or name not in ctx.registry.entries or FACES not in ctx.registry.entry(name).tags:
        return hidden
    first = ("faces found", path) not in ctx.session_cache(request)
    found = detected(ctx, request, path)
    if found is None or len(found.faces) < 2:
        return hidden
    kept = ctx.session_cache(request).get(("face chosen", slot))
    if not kept or kept[0] != path:
        remember(ctx, request, slot, path, 0)
    if first:
        gr.Warning(f"{whose}{several_faces_note(found.faces, chosen(ctx, request, slot, path))}")
    return view(ctx, request, path, len(found.faces), lambda: _thumbnails(path, found))


def _thumbnails(path: str, found) -> list:
    from core.image_input import load_image

    img = load_image(path, channels=3, min_side=16)
    return [face_thumbnail(img, f.box, THUMB_SIDE) for f in found.faces]
