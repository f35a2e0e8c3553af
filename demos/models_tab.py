"""Models tab: every model with its status and licence, plugin errors, and the user's own checkpoints."""

from __future__ import annotations

import gradio as gr

from demos.common import AppContext


def table(ctx: AppContext) -> list[list[str]]:
    rows = []
    for name in ctx.names():
        card = ctx.registry.entry(name).card
        licence = card.licence + ("" if card.commercial_use else " (non-commercial)")
        rows.append([name, card.title, ctx.registry.status(name), f"{card.resolution}px" if card.resolution else "?", licence, card.source])
    return rows


def errors_markdown(ctx: AppContext) -> str:
    if not ctx.registry.errors:
        return "All plugins loaded."
    return "**Plugins that failed to load** (the rest of the app works):\n\n" + "\n".join(
        f"- `{e.plugin}`: {e.message}" for e in ctx.registry.errors
    )


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    models = gr.Dataframe(table(ctx), headers=["id", "model", "status", "resolution", "licence", "source"],
                          interactive=False, wrap=True, elem_id="models_table")
    errors = gr.Markdown(errors_markdown(ctx), elem_id="models_errors")
    refresh = gr.Button("Refresh", size="sm", elem_id="models_refresh")
    with gr.Accordion("Add your own StyleGAN2 / StyleGAN3 network pickle (.pkl)", open=False):
        gr.Markdown("NVIDIA-format pickles are read by a restricted loader: no code stored in the file ever runs. "
                    "Tampered or unknown files are refused. The checkpoint's own licence applies to its outputs.")
        with gr.Row():
            upload = gr.File(label="Upload a .pkl", file_types=[".pkl"], elem_id="models_pkl_upload")
            local_path = gr.Textbox(label="…or the name of a file in the server's models folder",
                                    placeholder="network-snapshot.pkl", elem_id="models_pkl_path",
                                    visible=ctx.models_dir is not None)
        with gr.Row():
            title = gr.Textbox(label="Display name (optional)", elem_id="models_pkl_title")
            faces = gr.Checkbox(False, label="It is a face model (offer it in the Family tab)", elem_id="models_pkl_faces")
        add = gr.Button("Add model", elem_id="models_pkl_add")
        added = gr.Markdown("", elem_id="models_pkl_status")

    def add_pickle(file_path, path_text, title_text, is_face, request: gr.Request, progress=gr.Progress()):
        from demos.local_models import add_server_pickle, add_uploaded_pickle

        if not file_path and not (path_text or "").strip():
            raise gr.Error("Upload a .pkl file first." if ctx.models_dir is None else "Upload a .pkl file or name one in the models folder first.")
        progress(0.1, desc="checking the pickle (nothing in it is executed)")
        tags = ("faces",) if is_face else ()
        try:
            if file_path:
                name = add_uploaded_pickle(ctx, file_path, request, title_text or None, tags)
            else:
                name = add_server_pickle(ctx, path_text, title_text or None, tags)
        except (ValueError, OSError) as e:
            raise gr.Error(str(e)) from e
        where = "every model list" if ctx.allow_shared_uploads or not file_path else "your session's model lists (private to you)"
        note = f"Added **{ctx.registry.entry(name).card.title}** (`{name}`). It is now in {where}."
        dropdowns = [gr.update(choices=ctx.choices("faces" if "family" in (d.elem_id or "") else None)) for d in ctx.model_dropdowns]
        return (note, table(ctx), *dropdowns)

    refresh.click(lambda: (table(ctx), errors_markdown(ctx)), None, [models, errors], api_name="models")
    demo.load(lambda: (table(ctx), errors_markdown(ctx)), None, [models, errors], api_name="models_on_load", show_progress="hidden")
    add.click(add_pickle, [upload, local_path, title, faces], [added, models, *ctx.model_dropdowns], api_name="add_pickle")
