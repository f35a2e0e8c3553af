"""Every input a tab shows reaches a handler: a widget added to a tab's layout but to no event (or settings) would
silently do nothing."""

from __future__ import annotations

import gradio as gr
import pytest

from tests.conftest import restore_env, use_private_dirs

INPUTS = (gr.Slider, gr.Dropdown, gr.Checkbox, gr.CheckboxGroup, gr.Number, gr.Radio, gr.Textbox, gr.Image, gr.File)
TABS = ("projection", "interpolation", "family", "latent_map", "models")


def _inside(block) -> list:
    out = []
    for child in getattr(block, "children", []) or []:
        out += [child, *_inside(child)]
    return out


def unwired(demo: gr.Blocks, tab_id: str) -> list[str]:
    """The elem_ids of the tab's input components that no event takes as an input."""
    tab = next(b for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.id == tab_id)
    used = {block._id for fn in demo.fns.values() for block in fn.inputs}
    return [b.elem_id for b in _inside(tab)
            if isinstance(b, INPUTS) and b.elem_id and b.interactive is not False and b._id not in used]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    old = use_private_dirs(tmp_path_factory.mktemp("wiring"))
    from demos.app import build_app
    from plugins.registry import Registry

    app = build_app(Registry().discover(None, use_entry_points=False), max_steps=50)
    yield app
    app.latent_lab.close()
    restore_env(old)


@pytest.mark.parametrize("tab", TABS)
def test_every_input_of_a_tab_is_wired(demo, tab):
    inside = _inside(next(b for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.id == tab))
    assert any(isinstance(b, INPUTS) and b.elem_id for b in inside)  # the walk reaches the tab's widgets
    assert unwired(demo, tab) == []


def test_an_input_left_out_of_every_event_is_found():
    with gr.Blocks() as demo, gr.Tabs(), gr.Tab("T", id="t"):
        wired = gr.Slider(elem_id="t_wired")
        gr.Slider(elem_id="t_forgotten")
        shown = gr.Image(interactive=False, elem_id="t_output")  # an output, not an input
        gr.Button().click(lambda x: x, wired, shown)
    assert unwired(demo, "t") == ["t_forgotten"]
