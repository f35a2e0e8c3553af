"""ASGI middleware: every client gets a private cookie, and the app's files are served to their owners only.

Gradio serves any file in its cache folder to anyone who knows the URL (``/gradio_api/file=<path>``). Here, before
Gradio sees a request:

- a client without the ``latent_lab_owner`` cookie gets a fresh random one (browsers and ``gradio_client`` keep it;
  ``curl`` needs a cookie jar: ``-c jar -b jar``);
- ``/gradio_api/upload`` responses are read and the uploaded paths recorded as this client's;
- ``/gradio_api/file=`` for a file in the app's folder answers 404 unless this client (and ``--auth`` user) owns it;
- ``/gradio_api/heartbeat/<session>`` is counted while open: a session with an open tab never expires.

Installed through ``launch(app_kwargs={"middleware": [...]})`` (FastAPI's own option), so it runs inside Gradio's
CORS and compression middlewares.
"""

from __future__ import annotations

import json
import re
import secrets
from http.cookies import CookieError, SimpleCookie

from demos.sessions import OWNER_COOKIE, Owner, SessionFiles, session_key

API = "/gradio_api/"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")


def _cookies(headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], int | None]:
    for i, (name, value) in enumerate(headers):
        if name.lower() == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:
                return {}, i
            return {k: m.value for k, m in jar.items()}, i
    return {}, None


def _user(app, cookies: dict[str, str]) -> str | None:
    cookie_id = getattr(app, "cookie_id", None)
    tokens = getattr(app, "tokens", None) or {}
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token) if token else None


class FileAccess:
    """The middleware; ``files`` is the app's :class:`~demos.sessions.SessionFiles`."""

    def __init__(self, app, files: SessionFiles) -> None:
        self.app = app
        self.files = files

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers") or [])
        cookies, at = _cookies(headers)
        token = cookies.get(OWNER_COOKIE, "")
        new_token = None
        if not _TOKEN.match(token):
            token = new_token = secrets.token_urlsafe(32)
            pair = f"{OWNER_COOKIE}={token}".encode()
            if at is None:
                headers.append((b"cookie", pair))
            else:  # Starlette reads the first Cookie header only: extend it
                headers[at] = (b"cookie", headers[at][1] + b"; " + pair)
            scope = {**scope, "headers": headers}
        owner = Owner(token, _user(scope.get("app"), cookies))
        if new_token is not None:
            send = _with_cookie(send, new_token)

        path = scope.get("path", "")
        rest = path[path.find(API) + len(API):] if API in path else None
        method = scope.get("method", "GET")
        if rest is not None and rest.startswith("file=") and method in ("GET", "HEAD"):
            target = rest[len("file="):]
            if not target.startswith(("http://", "https://")) and self.files.may_serve(target, owner) is False:
                await _not_found(send)
                return
        elif rest is not None and rest.rstrip("/") == "upload" and method == "POST":
            await self._upload(scope, receive, send, owner)
            return
        elif rest is not None and rest.startswith("heartbeat/") and method == "GET":
            key = session_key(rest.split("/")[1])
            self.files.heartbeat(key, owner, +1)
            try:
                await self.app(scope, receive, send)
            finally:
                self.files.heartbeat(key, owner, -1)
            return
        await self.app(scope, receive, send)

    async def _upload(self, scope, receive, send, owner: Owner) -> None:
        status = 0
        body = bytearray()

        async def capture(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and len(body) < 1 << 20:
                body.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        if status == 200:
            try:
                paths = json.loads(bytes(body))
            except ValueError:
                return  # compressed or not a list: nothing we can record (the file is then usable by nobody)
            if isinstance(paths, list):
                self.files.claim([p for p in paths if isinstance(p, str)], owner)


def _with_cookie(send, token: str):
    cookie = f"{OWNER_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax".encode()

    async def wrapped(message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
        await send(message)

    return wrapped


async def _not_found(send) -> None:
    body = b'{"detail":"Not Found"}'
    await send({"type": "http.response.start", "status": 404,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
