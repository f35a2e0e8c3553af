"""Models tab: every model with its status and licence, plugin errors, and the user's own model files.

Handlers are top-level functions of plain values (tests call them directly). Which
plugin reads an added file is the registry's business (``Registry.add_file``): this
tab imports no plugin.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import gradio as gr

from core.tags import FACES
from demos.common import AppContext, model_panel
from demos.wiring import bind, bind_settings

# No "source" column: its long URLs pushed the table past the page's right edge (the model card shows the source).
HEADERS = ["id", "model", "status", "size", "licence"]

# An absolute path inside a message (not the tail of a URL or of a relative name): shown by its last part only.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/-])/(?:[^\s'\"/]+/)+([^\s'\"/]+)")


def without_server_paths(text: str) -> str:
    """``text`` with every absolute path cut to its base name: a refusal must not tell a visitor where files live."""
    return _ABSOLUTE_PATH.sub(r"\1", text)


def _refusal(e: Exception, file_path: str | None) -> str:
    if isinstance(e, OSError) and not isinstance(e, ValueError):
        what = f"the file {os.path.basename(file_path)}" if file_path else "the model file"
        return f"Could not read {what}: {e.strerror or type(e).__name__}."
    return without_server_paths(str(e))


def _no_stray_temp_file(upload: gr.File) -> gr.File:
    """Hand on the uploaded file's path without Gradio's extra temporary file.

    ``gr.File`` (type "filepath") opens a ``NamedTemporaryFile(delete=False)`` in its cache for each upload it
    preprocesses, never writes to it and loses its name, so every upload left an empty file until the app stopped.
    The upload itself is owned and deleted by the app's session files as before.
    """
    from gradio.utils import NamedString
    from gradio_client.utils import is_valid_file

    def process(f) -> NamedString:
        if upload.file_types and not is_valid_file(f.path, upload.file_types):
            raise gr.Error(f"Upload a model file ({', '.join(upload.file_types)}).")
        return NamedString(f.path)

    upload._process_single_file = process
    return upload


def table(ctx: AppContext) -> list[list[str]]:
    rows = []
    for name in ctx.names():
        card = ctx.registry.entry(name).card
        licence = card.licence + ("" if card.commercial_use else " (non-commercial)")
        size = f"{card.resolution}px" + (" (any)" if card.size_multiple else "") if card.resolution else "any"
        rows.append([name, card.title, ctx.registry.status(name), size, licence])
    return rows


def errors_markdown(ctx: AppContext) -> str:
    if not ctx.registry.errors:
        return "All plugins loaded."
    return "**Plugins that failed to load** (the rest of the app works):\n\n" + "\n".join(
        f"- `{e.plugin}`: {e.message}" for e in ctx.registry.errors
    )


def overview(ctx: AppContext) -> tuple[list[list[str]], str]:
    """The table and the plugin errors, as shown on load and on Refresh."""
    return table(ctx), errors_markdown(ctx)


@dataclass
class AddModelSettings:
    """The "Add your own model" inputs by name (``demos.wiring.bind_settings``)."""

    upload: str | None = None  # an uploaded model file
    path: str | None = None  # or the name of a file or folder in the operator's --models-dir (or a hub id)
    title: str | None = None  # display name (optional)
    faces: bool = False  # a face model: offered in the Family tab


def add_model(ctx: AppContext, s: AddModelSettings, request: gr.Request = None, progress=gr.Progress()) -> str:
    """Add an uploaded model file (private to this session unless the operator shares uploads) or a file of the
    operator's ``--models-dir``; returns the note. A refused file raises, and only this note's output shows the
    error: the table is refreshed by a separate step that runs only on success."""
    from demos.local_models import add_server_pickle, add_uploaded_pickle

    file_path, path_text, title_text, is_face = s.upload, s.path, s.title, s.faces
    if not file_path and not (path_text or "").strip():
        raise gr.Error("Upload a model file first." if ctx.models_dir is None else
                       "Upload a model file or name one in the models folder first.")
    progress(0.1, desc="checking the file (nothing in it is executed)")
    tags = (FACES,) if is_face else ()
    try:
        if file_path:
            name = add_uploaded_pickle(ctx, file_path, request, title_text or None, tags)
        else:
            name = add_server_pickle(ctx, path_text, title_text or None, tags)
    except (ValueError, OSError) as e:
        raise gr.Error(_refusal(e, file_path)) from e
    where = "every model list" if ctx.allow_shared_uploads or not file_path else "your session's model lists (private to you)"
    return f"Added **{ctx.registry.entry(name).card.title}** (`{name}`). It is now in {where}."


def model_lists(ctx: AppContext) -> tuple:
    """The table and every tab's model dropdown, refreshed after a model was added (the Family tab lists face models)."""
    dropdowns = [gr.update(choices=ctx.choices(FACES if "family" in (d.elem_id or "") else None)) for d in ctx.model_dropdowns]
    return (table(ctx), *dropdowns)


def chosen_row(evt: gr.SelectData) -> dict:
    """A click on a table row chooses that model in the panel above it (whose button downloads it)."""
    row = getattr(evt, "row_value", None)
    return gr.update(value=row[0]) if row else gr.update()


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    model, card, _ = model_panel(ctx, "models", label="Model (click a row to choose it; Download weights fetches it)")
    models = gr.Dataframe(table(ctx), headers=HEADERS, interactive=False, wrap=True, elem_id="models_table",
                          column_widths=["22%", "24%", "14%", "10%", "30%"])
    errors = gr.Markdown(errors_markdown(ctx), elem_id="models_errors")
    refresh = gr.Button("Refresh", size="sm", elem_id="models_refresh")
    suffixes = sorted(s for s in ctx.registry.file_loaders if s.startswith("."))  # not the folder loader's key
    with gr.Accordion("Add your own model: a StyleGAN .pkl, a diffusers folder or a Hugging Face Hub id", open=False):
        gr.Markdown("NVIDIA-format pickles are read by a restricted loader: no code stored in the file ever runs. "
                    "Tampered or unknown files are refused. Diffusers models (UNet2DModel, AutoencoderKL, AutoencoderTiny, "
                    "VQModel): type a folder on the server or a hub id such as `google/ddpm-cifar10-32`, then press "
                    "Download in a model panel; folders or repositories with their own code are refused. "
                    "The checkpoint's own licence applies to its outputs.")
        with gr.Row():
            upload = _no_stray_temp_file(gr.File(label=f"Upload a model file ({', '.join(suffixes) or 'none readable'})",
                                                 file_types=suffixes or None, elem_id="models_pkl_upload"))
            local_path = gr.Textbox(label="…or the name of a file in the server's models folder",
                                    placeholder="network-snapshot.pkl", elem_id="models_pkl_path",
                                    visible=ctx.models_dir is not None)
        with gr.Row():
            title = gr.Textbox(label="Display name (optional)", elem_id="models_pkl_title")
            faces = gr.Checkbox(False, label="It is a face model (offer it in the Family tab)", elem_id="models_pkl_faces")
        add = gr.Button("Add model", elem_id="models_pkl_add")
        added = gr.Markdown("", elem_id="models_pkl_status")

    refresh.click(bind(overview, ctx), None, [models, errors], api_name="models")
    demo.load(bind(overview, ctx), None, [models, errors], api_name="models_on_load", api_visibility="private",
              show_progress="hidden")
    models.select(chosen_row, None, model, api_visibility="private", show_progress="hidden")
    card.change(bind(overview, ctx), None, [models, errors], api_visibility="private", show_progress="hidden")  # status
    add.click(*bind_settings(add_model, ctx, AddModelSettings, {"upload": upload, "path": local_path, "title": title,
                                                                 "faces": faces}), added, api_name="add_pickle").success(
        bind(model_lists, ctx), None, [models, *ctx.model_dropdowns], api_name="models_after_add", api_visibility="private",
        show_progress="hidden")
