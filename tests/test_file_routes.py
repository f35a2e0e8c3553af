"""Every route of the running app that can hand out a file serves the app's files to their owner only.

The routes are read from the launched app's own route table (``demos.file_access.file_routes``), not from a list:
a route Gradio adds later is covered, and this test tries it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from PIL import Image

from demos.file_access import all_routes, file_routes
from tests.test_privacy_server import _call, _file, _upload

DIGITS = "small_ae/digits"
ARGS = ["latent", "mean", "mse", 3, False, 0, False, 512, True]


@pytest.fixture
def app_url(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv("LATENT_LAB_CACHE", str(tmp_path / "cache"))
    from demos.app import build_app, launch
    from plugins.registry import Registry

    demo = build_app(Registry().discover(None, use_entry_points=False), max_steps=1000, concurrency=1)
    launch(demo, block=False)
    try:
        yield demo, demo.local_url
    finally:
        demo.close()


def _urls(url: str, template: str, param: str, path: str) -> list[str]:
    """``path`` put in a route's path parameter, plainly and in the disguises a visitor could try."""
    base = url.rstrip("/")
    folder, name = path.rsplit("/", 1)
    disguises = [path, quote(path, safe=""), quote(quote(path, safe=""), safe=""),
                 f"{folder}/../{Path(folder).name}/{name}", f"{folder}/./{name}", "/" + path]
    return [base + template.replace("{" + param + ":path}", d) for d in disguises]


def test_every_file_route_serves_a_file_to_its_owner_only(app_url, tmp_path):
    demo, url = app_url
    routes = file_routes(demo.app)
    templates = {route.path for route, _ in routes}
    assert "/gradio_api/file={path_or_url:path}" in templates and "/gradio_api/file/{path:path}" in templates

    photo = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(photo)
    with httpx.Client(timeout=60) as alice, httpx.Client(timeout=60) as bob, httpx.Client(timeout=60) as nobody:
        uploaded = _upload(alice, url, photo)
        kind, out = _call(alice, url, "project", [DIGITS, _file(uploaded), *ARGS])
        assert kind == "complete", out
        output = out[0]["path"]
        serving = []  # the routes that hand alice her files' bytes
        for route, params in routes:
            for path in (uploaded, output):
                urls = _urls(url, route.path, params[0], path)
                got = alice.get(urls[0])
                if got.status_code != 200:
                    continue
                serving.append(route.path)
                assert got.content == Path(path).read_bytes()
                for u in urls:
                    for other in (bob, nobody):
                        r = other.get(u)
                        assert r.status_code == 404, (u, r.status_code)
                        assert other.head(u).status_code in (404, 405), u
        assert {"/gradio_api/file={path_or_url:path}", "/gradio_api/file/{path:path}"} <= set(serving)
        # A file of ours named anywhere else in a URL (a route not in the table, a query) is refused just the same.
        assert bob.get(f"{url}gradio_api/unknown{output}").status_code == 404
        assert bob.get(f"{url}gradio_api/file=x", params={"p": output}).status_code == 404


def test_deep_links_are_off(app_url):
    demo, url = app_url
    assert any(getattr(r, "path", "").endswith("/deep_link") for r in all_routes(demo.app.routes))  # Gradio has one
    with httpx.Client(timeout=30) as visitor:
        assert visitor.get(f"{url}gradio_api/deep_link", params={"session_hash": "abc"}).status_code == 404
        assert visitor.get(url).status_code == 200  # the page itself is served
