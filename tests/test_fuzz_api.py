"""Every API endpoint of a real server, fed values no visitor should send: each refusal must be a sentence.

Gradio sends a message to the client only for a ``gr.Error``; anything else arrives as ``"error": null`` and leaves a
traceback in the log. The endpoints come from the app's own ``/gradio_api/info``, so a new one is fuzzed too. Each
parameter gets a few bad values of its kind while the others keep their defaults (no product of all).
"""

from __future__ import annotations

import math
import signal

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.server_process import ServerProcess
from tests.test_privacy_server import _call

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
NUMBERS = ("Number", "Slider")
FILES = ("Image", "File")


def _file(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def _bad_values(component: str, elsewhere: str) -> list:
    """A few values of the wrong kind for one parameter; ``elsewhere``: a file uploaded by another client."""
    if component in NUMBERS:
        return [math.nan, math.inf, -math.inf, 1e308, -1e9, "twelve", [1], None]
    if component in FILES:
        return [_file("/etc/passwd"), _file(elsewhere), "/etc/passwd", 123, {"path": None}, [], ""]
    if component in ("Checkbox",):
        return ["yes", 7, None]
    if component in ("Checkboxgroup", "CheckboxGroup"):
        return ["coarse", [1, None], None]
    return ["", "x" * 20000, "/etc/passwd", "../../../etc/passwd", 123, None, ["a"]]


def _is_sentence(message) -> bool:
    return isinstance(message, str) and len(message.strip()) >= 10 and " " in message.strip()


def test_every_endpoint_refuses_bad_values_with_a_sentence(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photo)
    with ServerProcess(tmp_path / "tmp") as server, httpx.Client(timeout=60) as me, httpx.Client(timeout=60) as other:
        url = server.url
        theirs = other.post(f"{url}gradio_api/upload", files={"files": ("theirs.png", photo.read_bytes())}).json()[0]
        info = me.get(f"{url}gradio_api/info").raise_for_status().json()
        endpoints = info["named_endpoints"]
        assert len(endpoints) >= 20 and "/project" in endpoints and "/family_children" in endpoints
        silent, leaked, calls = [], [], 0
        for api, spec in endpoints.items():
            params = spec["parameters"]
            defaults = [p.get("parameter_default") if p["component"] not in FILES else None for p in params]
            cases = [("no values", []), ("not a list", "x")] if params else []
            for i, p in enumerate(params):
                for bad in _bad_values(p["component"], theirs):
                    data = list(defaults)
                    data[i] = bad
                    cases.append((f"{p.get('parameter_name')}={str(bad)[:30]!r}", data))
            for what, data in cases:
                kind, payload = _call(me, url, api.lstrip("/"), data)
                calls += 1
                if kind == "complete":
                    continue
                message = payload.get("error") if isinstance(payload, dict) and kind == "error" else payload
                if kind.startswith("http 4") and isinstance(payload, list):  # the web framework's own check of the body
                    message = "; ".join(str(d.get("msg")) for d in payload if isinstance(d, dict))
                if not _is_sentence(message):
                    silent.append(f"{api} {what}: {kind} {payload!r}"[:300])
                if str(server.tmpdir) in str(message) or "latent_lab_gradio_" in str(message):
                    leaked.append(f"{api} {what}: {message!r}"[:300])  # a server path shown to a visitor
                if what.endswith(("='nan'", "='inf'", "='-inf'")):  # refused by name, not drawn as a black image
                    assert "finite" in str(message), (api, what, message)
        assert server.proc.poll() is None, server.output()[-3000:]
        assert not silent, f"{len(silent)} of {calls} calls refused without a sentence:\n" + "\n".join(silent[:40])
        assert not leaked, "server paths in messages:\n" + "\n".join(leaked[:20])
        kind, _ = _call(me, url, "models", [])  # still serving
        assert kind == "complete"
        log = server.output()
        assert "Traceback" not in log, log[log.index("Traceback") - 500:][:4000]
        server.signal(signal.SIGTERM)



def test_numbers_are_refused_by_name():
    import gradio as gr

    from demos.common import finite_number

    for bad, words in ((math.nan, "finite"), (math.inf, "finite"), ("3", "a number"), (True, "a number"), (7, "from 0 to 3")):
        with pytest.raises(gr.Error) as e:
            finite_number(bad, "Age", 0, 3)
        assert e.value.message.startswith("Age must") and words in e.value.message
    assert finite_number(2.5, "Age", 0, 3) == 2.5 and finite_number(None, "Age") is None


def test_a_fault_of_the_app_reaches_the_visitor_as_a_sentence_and_the_log_as_a_traceback(capfd):
    import gradio as gr
    from gradio_client import Client

    from demos.common import FAULT, plain_refusals
    from tests.conftest import app_error

    def broken(x):
        raise RuntimeError("a bug of ours")

    with gr.Blocks() as demo:
        n = gr.Number(1, label="Frames (per second)")
        out = gr.Number()
        gr.Button().click(broken, n, out, api_name="broken")
    plain_refusals(demo)
    demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        assert app_error(lambda: client.predict(2, api_name="/broken")) == FAULT
        assert "RuntimeError: a bug of ours" in capfd.readouterr().err  # the fault keeps its traceback
        with httpx.Client(timeout=30) as http:  # gradio_client cannot send NaN
            kind, payload = _call(http, demo.local_url, "broken", [math.nan])
        assert kind == "error" and payload["error"] == "Frames must be a finite number; got nan."
        err = capfd.readouterr().err
        assert "Traceback" not in err and "refused input of broken: Frames must be a finite number" in err  # one line
    finally:
        demo.close()
