"""Models tab: every model with its status and licence, plugin errors, and local checkpoints."""

from __future__ import annotations

import gradio as gr

from demos.common import AppContext


def table(ctx: AppContext) -> list[list[str]]:
    rows = []
    for name in ctx.registry.names():
        card = ctx.registry.entry(name).card
        licence = card.licence + ("" if card.commercial_use else " (non-commercial)")
        rows.append([name, card.title, ctx.registry.status(name), f"{card.resolution}px", licence, card.source])
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
    refresh.click(lambda: (table(ctx), errors_markdown(ctx)), None, [models, errors], api_name="models")
    demo.load(lambda: (table(ctx), errors_markdown(ctx)), None, [models, errors], api_name="models_on_load", show_progress="hidden")
