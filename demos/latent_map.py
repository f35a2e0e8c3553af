"""Latent map tab: PCA / UMAP / t-SNE of encoded data, click to decode, nearest neighbours.

Handlers are top-level functions of plain values (tests call them directly); ``build`` only lays out and wires.
"""

from __future__ import annotations

import contextlib
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np

from demos.common import (
    DECODE,
    DECODE_STEPS,
    HEAVY,
    AppContext,
    ImageUpload,
    caption,
    decode_steps_slider,
    decode_steps_view,
    model_panel,
)
from demos.map_figure import map_figure
from demos.projection import prepare_target
from demos.thread_stop import MapStopped, interrupt
from demos.wiring import bind, bind_settings, request_stop, stop_flag

# Plotly click -> hidden textbox bridge: gr.Plot has no click event, so a small
# script forwards the clicked point's dataset index (its customdata).
HEAD = """
<script>
(() => {
  const attach = (el) => {
    if (el.__latentLabClick || typeof el.on !== "function") return;
    el.__latentLabClick = true;
    el.on("plotly_click", (ev) => {
      const p = ev && ev.points && ev.points[0];
      if (!p || p.customdata === undefined || p.customdata === null) return;
      const idx = Array.isArray(p.customdata) ? p.customdata[0] : p.customdata;
      const box = document.querySelector("#map_click textarea, #map_click input");
      if (!box) return;
      box.value = idx + ":" + Date.now();
      box.dispatchEvent(new Event("input", { bubbles: true }));
    });
  };
  const scan = () => document.querySelectorAll("#map_plot .js-plotly-plot").forEach(attach);
  new MutationObserver(scan).observe(document.documentElement, { childList: true, subtree: true });
})();
</script>
"""




def _dims_api_info(self: gr.Radio) -> dict[str, Any]:
    return {"enum": [c[1] for c in self.choices], "title": "Dimensions", "type": "integer"}


def _dims_preprocess(self: gr.Radio, payload):
    if isinstance(payload, str) and payload.strip().isdigit():
        payload = int(payload)
    return gr.Radio.preprocess(self, payload)


def DimsRadio(choices: list[int], **kwargs) -> gr.Radio:  # noqa: N802 - used like a component class
    """2 or 3 dimensions, documented in the API as the integers the handlers take (a plain Radio of numbers is
    described as a string, which the server then refuses); "2" / "3" are accepted too.

    A patched instance, not a subclass: Gradio writes a .pyi stub beside the module of every Component subclass.
    """
    radio = gr.Radio(choices, **kwargs)
    radio.api_info = types.MethodType(_dims_api_info, radio)
    radio.preprocess = types.MethodType(_dims_preprocess, radio)
    return radio


def NamedDropdown(what: str, **kwargs) -> gr.Dropdown:  # noqa: N802 - used like a component class
    """A dropdown whose choices depend on the model: the API page shows them as text with where to find them (its
    choices when the page is drawn are none: ``Literal[]``)."""
    dropdown = gr.Dropdown([], **kwargs)
    dropdown.api_info = lambda: {"type": "string", "description": what}
    return dropdown


def dataset_choices(ctx: AppContext, name: str | None) -> tuple[dict, dict]:
    """The model's datasets and the first one's labels: (dataset, colour-by) updates.

    Both at once: two models often have datasets of the same name, and then the
    dataset box does not change, fires no event, and "Colour by" would keep the
    previous model's labels.
    """
    if not name or ctx.registry.status(name) == "not downloaded":
        return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
    names = list(ctx.model(name).datasets())
    first = names[0] if names else None
    return gr.update(choices=names, value=first), label_choices(ctx, name, first)


def label_choices(ctx: AppContext, name: str | None, ds: str | None) -> dict:
    if not name or not ds:
        return gr.update(choices=[], value=None)
    labels = list(ctx.dataset(name, ds).labels)
    return gr.update(choices=labels, value=labels[0] if labels else None)


@dataclass
class MapSettings:
    """Which map: the tab's first five inputs by name (``demos.wiring.bind_settings``), shared by every map event."""

    model: str | None
    dataset: str | None
    method: str = "pca"
    dims: int = 2
    colour: str | None = None  # the label the points are coloured by (None: one colour)

    def shown(self) -> list:
        """What the map on screen is of (the ``shown`` state: recolouring keeps model, dataset, method and dims)."""
        return [self.model, self.dataset, self.method, self.dims]


def compute(ctx: AppContext, v: MapSettings, highlight=None, query_coords=None):
    """(dataset, map, figure); an unknown "colour by" or dimension count is refused, not ignored."""
    name, ds, how, n_dims, by = v.model, v.dataset, v.method, v.dims, v.colour
    data = ctx.dataset(name, ds)
    if by and by not in data.labels:
        raise gr.Error(f"The dataset '{ds}' has no label '{by}' to colour by (it has: {', '.join(data.labels) or 'none'}).")
    if n_dims not in (2, 3):
        raise gr.Error(f"A map has 2 or 3 dimensions, not {n_dims}.")
    try:
        lmap = ctx.maps.get(name, ds, data.latents, how, int(n_dims))
    except (ValueError, ImportError) as e:
        raise gr.Error(str(e)) from e
    labels = data.labels.get(by) if by else None
    title = f"{ctx.registry.entry(name).card.title} · {ds} · {how.upper()}"
    fig = map_figure(lmap.coords, labels, by or "", title, highlight, query_coords)
    return data, lmap, fig


def show_map(ctx: AppContext, v: MapSettings, request: gr.Request = None, progress=gr.Progress()):
    """The map, its text and what it shows (for recolouring). A UMAP / t-SNE not yet cached is computed in a thread
    while this says how long it has run; Stop (or a client that leaves) ends that computation itself
    (``demos.thread_stop.interrupt``), not only the wait, and nothing is cached."""
    if v.method == "pca":
        yield (*_map_result(ctx, v), v.shown())
        return
    stop = stop_flag(ctx, request, "map")
    done: dict[str, Any] = {}

    def work() -> None:
        try:
            done["result"] = _map_result(ctx, v)
        except MapStopped:
            done["stopped"] = True
        except Exception as e:  # handed to the handler, which raises it as the request's own
            done["error"] = e
        finally:
            done["over"] = True  # from here on an interruption would land outside the work: none is sent

    worker = threading.Thread(target=work, name="latent-lab-map", daemon=True)
    worker.start()
    start = time.monotonic()
    what = str(v.method).upper()
    while worker.is_alive():
        worker.join(0.5)
        if stop.is_set():
            if worker.is_alive():
                yield (gr.update(), f"Stopping the {what} computation (it ends after its current step)…", gr.update())
            while worker.is_alive() and "over" not in done:
                worker.join(1.0 if interrupt(worker) else 0.1)
            worker.join()
            break
        if worker.is_alive():
            seconds = time.monotonic() - start
            progress(None, desc=f"{what}: {seconds:.0f} s")
            yield (gr.update(), f"Computing the {what} map: {seconds:.0f} s so far (UMAP and t-SNE take seconds to "
                   "minutes; the result is cached). **Stop** ends the computation.", gr.update())
    if "error" in done:
        raise done["error"]
    if "result" not in done:
        yield (gr.update(), f"**Stopped.** The {what} computation was ended after {time.monotonic() - start:.0f} s; "
               "nothing was cached. Press **Compute map** to start again (PCA is instant).", gr.update())
        return
    yield (*done["result"], v.shown())


def stop_map(ctx: AppContext, request: gr.Request = None) -> None:
    """Stop: the session's UMAP / t-SNE ends at its next step (a map still waiting for its turn, at once)."""
    request_stop(ctx, request, "map", ("map",))


def _map_result(ctx: AppContext, v: MapSettings) -> tuple:
    data, lmap, fig = compute(ctx, v)
    extra = f" · explained variance {lmap.info['explained_variance']}" if "explained_variance" in lmap.info else ""
    if "summarised" in lmap.info:  # a large latent (a VAE's 4 x 32 x 32, a noise image): mapped by a low-pass summary
        extra += f" · latents {lmap.info['summarised']} before mapping; decoded points are nearest-neighbour blends"
    note = "cached" if lmap.cached else f"computed in {lmap.seconds:.1f} s"
    imgs = "real images" if data.images is not None else "decoded latents (the source images are not shipped)"
    return fig, f"{len(data)} points, space **{data.space}**, {note}{extra}. Neighbours show {imgs}.\n\n{data.description}"


def recolour(ctx: AppContext, shown: list | None, name: str | None, ds: str | None, by: str | None):
    """The map on screen coloured by another label at once (from the map cache: nothing is recomputed); no change
    when no map is shown or it belongs to another model or dataset than the ones chosen now."""
    if not shown or [name, ds] != list(shown[:2]):
        return gr.update()
    data = ctx.dataset(name, ds)
    if by and by not in data.labels:
        return gr.update()
    return compute(ctx, MapSettings(*shown, by))[2]


def clear_map() -> tuple:
    """A new model or dataset: the old map, its text, the decoded point (and its number) and the neighbours go."""
    return None, "", None, "", [], None, None


def warm_up_umap() -> None:
    """Pay numba's first compile of UMAP (tens of seconds) once, in the background after start-up, instead of the first
    visitor who asks for a UMAP map."""
    import sys

    try:
        from core.latent_map import reduce

        reduce(np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32), "umap", 2)
    except Exception as e:  # a warm-up is an optimisation: it must never stop the app
        print(f"warning: warming up UMAP failed: {e}", file=sys.stderr)


def _decode_latent(ctx: AppContext, name: str, lat, space: str, request: gr.Request | None,
                   decode_steps: float | None = None) -> str:
    import torch

    from core.images import to_pil

    m = ctx.model(name)
    img = to_pil(ctx.executor.generate(m, torch.as_tensor(lat), space, **m.decode_options(decode_steps)))[0]
    return ctx.save_image(request, img, "decoded", min_side=256)


def decode_point(ctx: AppContext, v: MapSettings, i: float | None, decode_steps: float | None = DECODE_STEPS,
                 request: gr.Request | None = None):
    """Decode point ``i``; ``decode_steps``: a diffusion model's sampling steps (ignored by one-shot decoders)."""
    name = v.model
    data = ctx.dataset(name, v.dataset)
    if i is None or i != int(i) or not 0 <= int(i) < len(data):
        raise gr.Error(f"Choose a point number between 0 and {len(data) - 1}.")
    i = int(i)
    labels = ", ".join(f"{k}: {v[i]}" for k, v in data.labels.items())
    return _decode_latent(ctx, name, data.latents[i : i + 1], data.space, request, decode_steps), f"Point #{i} ({labels}).\n\n_{caption(ctx, name)}_", i


MAX_CLICK_BATCH = 16  # map clicks decoded in one batch (Gradio batch=True): other visitors' clicks queued meanwhile


def decode_clicks(ctx: AppContext, names: list[str], dss: list[str], hows: list[str], dims: list[int], bys: list[str | None],
                  values: list[str | None], decode_steps: list[float | None] | None = None,
                  request: gr.Request | None = None) -> list[list]:
    """The plot's clicks, for a batch of visitors (Gradio ``batch=True``: one list per input; each item's request
    from ``demos.serving.batch_requests``). The click bridge sends "index:timestamp" (the timestamp makes a second click
    on a point a change). The points of one model and space are decoded by one ``generate`` call, each image saved
    in its own visitor's session folder.

    Why: decoding is most of a click's cost (a StyleGAN synthesis, a diffusion model's sampling loop), and a GPU
    decodes 16 latents in about the time of one. A batch succeeds or fails as a whole in Gradio, so one visitor's
    bad click is answered in that visitor's text (the image left as it was), not as an error for everyone.
    ``decode_steps``: each visitor's diffusion steps (one-shot decoders ignore them; clicks differing in them are
    decoded apart). Returns the three output lists (image, text, point number).
    """
    import torch

    from core.images import to_pil
    from demos.serving import batch_requests

    requests = batch_requests(len(values), request)  # Gradio hands a batch function only the first visitor's request
    out: list[list] = [[gr.update()] * len(values), [gr.update()] * len(values), [gr.update()] * len(values)]
    groups: dict[tuple[str, str, tuple], list[tuple[int, int, object]]] = {}  # (model, space, options) -> [(item, point, dataset)]
    steps = decode_steps or [None] * len(values)
    for k, (name, ds, value, req, n) in enumerate(zip(names, dss, values, requests, steps, strict=True)):
        if not value:
            continue
        try:
            with _as_request(req):
                i = int(str(value).split(":")[0])
                data = ctx.dataset(name, ds)
                if not 0 <= i < len(data):
                    raise gr.Error(f"Choose a point number between 0 and {len(data) - 1}.")
                options = ctx.model(name).decode_options(n)  # this visitor may use it (a private upload is its uploader's only)
            groups.setdefault((name, data.space, tuple(sorted(options.items()))), []).append((k, i, data))
        except (gr.Error, ValueError) as e:
            out[1][k] = f"**{e.message if isinstance(e, gr.Error) else 'That click did not name a point.'}**"
    for (name, space, options), items in groups.items():
        try:
            latents = torch.as_tensor(np.concatenate([data.latents[i : i + 1] for _, i, data in items]))
            images = to_pil(ctx.executor.generate(ctx.registry.get(name), latents, space, **dict(options)))
            for (k, i, data), img in zip(items, images, strict=True):
                labels = ", ".join(f"{key}: {v[i]}" for key, v in data.labels.items())
                out[0][k] = ctx.save_image(requests[k], img, "decoded", min_side=256)
                out[1][k] = f"Point #{i} ({labels}).\n\n_{caption(ctx, name)}_"
                out[2][k] = i
        except (gr.Error, ValueError, RuntimeError) as e:
            for k, _, _ in items:
                out[1][k] = f"**{e.message if isinstance(e, gr.Error) else e}**"
    return out


@contextlib.contextmanager
def _as_request(request: gr.Request | None) -> Iterator[None]:
    """Run the enclosed code as ``request``'s event (a batch runs with a list of requests; ownership checks that
    look up the current request need the item's own)."""
    from gradio.context import LocalContext

    token = LocalContext.request.set(request)
    try:
        yield
    finally:
        LocalContext.request.reset(token)


def decode_coords(ctx: AppContext, v: MapSettings, xv: float, yv: float, zv: float,
                  decode_steps: float | None = DECODE_STEPS, request: gr.Request | None = None):
    name = v.model
    data, lmap, _ = compute(ctx, v)
    point = np.array([xv, yv, zv][: int(v.dims)], dtype=np.float64)
    lat, how_text = lmap.latent_at(point, data.latents)
    return (_decode_latent(ctx, name, lat, data.space, request, decode_steps),
            f"Latent at ({', '.join(f'{v:.2f}' for v in point)}): {how_text}.\n\n_{caption(ctx, name)}_")


def find_neighbours(ctx: AppContext, v: MapSettings, path: str | None, n: float, n_steps: float,
                    decode_steps: float | None = DECODE_STEPS, request: gr.Request | None = None, progress=gr.Progress()):
    import torch

    from core.checks import whole_number
    from core.images import from_pil, to_pil
    from core.latent_map import Neighbours

    name, by = v.model, v.colour
    m = ctx.model(name)
    data = ctx.dataset(name, v.dataset)
    compute(ctx, v)  # refuse bad settings before the projection
    k = whole_number(n, "number of neighbours", 1, len(data))
    target = from_pil(prepare_target(ctx, m, name, path, True, request).image, m.channels)
    from core.projection import to_latent

    steps = whole_number(n_steps, "number of projection steps", 1, ctx.max_steps)
    lat = to_latent(m, target, data.space, on_event=lambda ev: progress(ev.step / ev.steps, desc=f"projecting: step {ev.step}/{ev.steps}"),
                    executor=ctx.executor, steps=steps).numpy()
    dist, idx = Neighbours(data.latents).query(lat, k)
    idx, dist = idx[0], dist[0]
    pics = (to_pil(data.images(idx)) if data.images is not None
            else to_pil(ctx.executor.generate(m, torch.as_tensor(data.latents[idx]), data.space, **m.decode_options(decode_steps))))
    label_of = data.labels.get(by) if by else None
    gallery = [(ctx.save_image(request, p, "neighbour", min_side=128),
                f"#{i} · d={d:.2f}" + (f" · {by}: {label_of[i]}" if label_of is not None else ""))
               for p, i, d in zip(pics, idx, dist, strict=True)]
    _, lmap, _ = compute(ctx, v)
    fig = compute(ctx, v, highlight=idx, query_coords=lmap.locate(lat, data.latents))[2]
    return gallery, fig


def build(ctx: AppContext, demo: gr.Blocks) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            model, _, _ = model_panel(ctx, "map")
            dataset = NamedDropdown("a dataset of the chosen model, as /map_datasets lists them (the built-in models: "
                                    "'training data (encoded)' or 'samples (N)')",
                                    label="Dataset", allow_custom_value=True, elem_id="map_dataset")
            method = gr.Radio(["pca", "umap", "tsne"], value="pca", label="Method",
                              info="PCA: exact, instant. UMAP / t-SNE: keep neighbourhoods, take seconds (cached after)",
                              elem_id="map_method")
            dims = DimsRadio([2, 3], value=2, label="Dimensions", elem_id="map_dims")
            colour = NamedDropdown("a label of the dataset, as /map_labels lists them (e.g. 'digit'), or empty",
                                   label="Colour by", allow_custom_value=True, elem_id="map_colour")
            with gr.Row():
                run = gr.Button("Compute map", variant="primary", elem_id="map_run")
                stop = gr.Button("Stop", elem_id="map_stop")
            shown = gr.State(None)  # [model, dataset, method, dims] of the map on screen
            info = gr.Markdown("", elem_id="map_info")
        with gr.Column(scale=2):
            plot = gr.Plot(label="Latent map (click a point to decode it)", elem_id="map_plot")
            click = gr.Textbox(visible="hidden", elem_id="map_click")
            with gr.Row():
                with gr.Column():
                    decoded = gr.Image(label="Decoded point", format="png", interactive=False, elem_id="map_decoded")
                    decoded_info = gr.Markdown("", elem_id="map_decoded_info")
                with gr.Column():
                    index = gr.Number(None, precision=0, label="Point #", elem_id="map_index")
                    with gr.Row():
                        x = gr.Number(0.0, label="x", elem_id="map_x")
                        y = gr.Number(0.0, label="y", elem_id="map_y")
                        zc = gr.Number(0.0, label="z (3-D)", elem_id="map_z")
                    decode_index = gr.Button("Decode point #", elem_id="map_decode_index")
                    decode_xy = gr.Button("Decode at coordinates", elem_id="map_decode_xy")
                    decode_steps = decode_steps_slider(ctx, "map")
            with gr.Accordion("Nearest neighbours of your image", open=True):
                with gr.Row():
                    query = ImageUpload(label="Your image", type="filepath", elem_id="map_query")
                    with gr.Column():
                        k = gr.Slider(1, 24, value=8, step=1, label="Neighbours", elem_id="map_k")
                        steps = gr.Slider(1, ctx.max_steps, value=100, step=1,
                                          label="Projection steps (models without an encoder)", elem_id="map_steps")
                        find = gr.Button("Find neighbours", elem_id="map_find")
                neighbours = gr.Gallery(label="Nearest neighbours (distance in latent space)", columns=8, format="png",
                                        height="auto", elem_id="map_neighbours")

    common = [model, dataset, method, dims, colour]  # MapSettings, in every map event's API order
    which = {"model": model, "dataset": dataset, "method": method, "dims": dims, "colour": colour}
    gr.on([model.change, demo.load], bind(dataset_choices, ctx), model, [dataset, colour], api_name="map_datasets",
          show_progress="hidden")
    dataset.change(bind(label_choices, ctx), [model, dataset], colour, api_name="map_labels", show_progress="hidden")
    gr.on([model.change, dataset.change], clear_map, None, [plot, info, decoded, decoded_info, neighbours, shown, index],
          api_visibility="private", show_progress="hidden")
    colour.change(bind(recolour, ctx), [shown, model, dataset, colour], plot, api_name="map_recolour",
                  api_visibility="private", show_progress="hidden")
    run.click(*bind_settings(show_map, ctx, MapSettings, which), [plot, info, shown], api_name="map", concurrency_id=HEAVY,
              show_progress_on=[info])
    stop.click(bind(stop_map, ctx), None, None, api_name="map_stop", api_visibility="private", concurrency_limit=None)
    # Batched: clicks of many visitors queued while a batch decodes go into the next one (demos/serving.py, DECODE).
    click.change(bind(decode_clicks, ctx), [*common, click, decode_steps], [decoded, decoded_info, index], api_name="map_click",
                 show_progress="hidden", batch=True, max_batch_size=MAX_CLICK_BATCH, concurrency_id=DECODE)
    decode_index.click(bind_settings(decode_point, ctx, MapSettings, which)[0], [*common, index, decode_steps],
                       [decoded, decoded_info, index],
                       api_name="map_decode_point")
    decode_xy.click(bind_settings(decode_coords, ctx, MapSettings, which)[0], [*common, x, y, zc, decode_steps],
                    [decoded, decoded_info], api_name="map_decode_xy")
    find.click(bind_settings(find_neighbours, ctx, MapSettings, which)[0], [*common, query, k, steps, decode_steps],
               [neighbours, plot], api_name="map_neighbours",
               concurrency_id=HEAVY)
    gr.on([model.change, demo.load], bind(decode_steps_view, ctx), model, decode_steps, api_name="map_decode_steps_view",
          api_visibility="private", show_progress="hidden")
