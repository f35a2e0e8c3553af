"""A visitor's own StyleGAN pickle: an upload (private to its session unless the operator shares uploads) or a
file in the one server folder the operator named with ``--models-dir``.

A path typed by a visitor is never opened, checked or even stat'ed: it is compared, as text, with the names of the
``.pkl`` files found in the models folder, so a path outside it (``/etc/shadow``) and a missing file get the same
message and the server reveals nothing about its other files.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import gradio as gr

from demos.common import AppContext

NO_SERVER_PATHS = "This server takes uploaded model files only: upload the file instead of typing a path."


def models_folder_files(models_dir: Path) -> dict[str, Path]:
    """The models inside ``models_dir`` by relative name: ``.pkl`` files and model folders (a diffusers folder holds a
    ``model_index.json`` or ``config.json``); links leading outside it are left out."""
    root = os.path.realpath(models_dir)
    inside = root.rstrip(os.sep) + os.sep
    found = {}
    candidates = [p for p in Path(models_dir).rglob("*.pkl") if os.path.isfile(os.path.realpath(p))]
    candidates += [p.parent for name in ("model_index.json", "config.json") for p in Path(models_dir).rglob(name)]
    for p in sorted(set(candidates)):
        if os.path.realpath(p).startswith(inside):
            found[p.relative_to(models_dir).as_posix()] = p
    return found


def not_found_message(models_dir: Path) -> str:
    names = list(models_folder_files(models_dir))
    listed = ", ".join(names[:20]) + (" …" if len(names) > 20 else "") if names else "none"
    return f"There is no such model in the models folder. Models there: {listed}."


def server_pickle(models_dir: Path | None, text: str) -> Path:
    """The models-folder file or folder named by ``text`` (its name inside the folder, or its full path); ValueError if none."""
    if models_dir is None:
        raise ValueError(NO_SERVER_PATHS)
    files = models_folder_files(models_dir)
    wanted = text.strip()
    if wanted in files:
        return files[wanted]
    for rel, p in files.items():  # the full path as the operator would type it
        if os.path.normpath(wanted) in (os.path.normpath(str(p)), os.path.normpath(str(Path(models_dir).resolve() / rel))):
            return p
    raise ValueError(not_found_message(models_dir))


def add_server_pickle(ctx: AppContext, text: str, title: str | None, tags: tuple[str, ...]) -> str:
    """Register a file of the models folder (shared with every visitor: the operator put it there)."""
    return ctx.registry.add_file(server_pickle(ctx.models_dir, text), title=title, tags=tags, copy=False)


def add_uploaded_pickle(ctx: AppContext, path: str, request: gr.Request | None, title: str | None,
                        tags: tuple[str, ...]) -> str:
    """Register an uploaded model file: for this session only (deleted with it), or for everyone with
    --allow-shared-uploads. Which plugin reads it is the registry's business. A refused upload is deleted at once."""
    ctx.own_input(request, path)
    if ctx.allow_shared_uploads:
        try:
            return ctx.registry.add_file(path, title=title, tags=tags, copy=True)
        finally:  # refused, or copied into the shared cache: the upload itself is not needed any more
            ctx.files.drop(path)
    folder = ctx.session_dir(request)
    try:
        entry, plugin = ctx.registry.file_entry(path, title=title, tags=tags, copy=False, cache_root=folder / "model_cache")
    except Exception:
        ctx.files.drop(path)  # a refused upload is deleted at once, as on every other tab
        raise
    name = f"{entry.name}-{uuid.uuid4().hex[:8]}"  # one per session: two visitors' identical files stay apart
    card = dataclasses.replace(entry.card, name=name, source=f"uploaded in your session ({Path(path).name}); private to it")
    private = dataclasses.replace(entry, card=card)
    ctx.add_private_model(name, request)  # private first, so no other session ever lists it
    ctx.registry.add(private, plugin=plugin)
    return name
