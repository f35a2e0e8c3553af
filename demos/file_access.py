"""ASGI middleware: every client gets a private cookie, and the app's files are served to their owners only.

Gradio serves any file in its cache folder to anyone who knows the URL, on more than one route
(``/gradio_api/file=<path>``, ``/gradio_api/file/<path>``, and whatever a later version adds). Here, before Gradio
sees a request:

- a client without the ``latent_lab_owner`` cookie gets a fresh random one (browsers and ``gradio_client`` keep it;
  ``curl`` needs a cookie jar: ``-c jar -b jar``);
- ``/gradio_api/upload`` responses are read and the uploaded paths recorded as this client's;
- every route that takes a file path (found in the app's own route table: a ``{name:path}`` parameter on GET or
  HEAD, see :func:`file_routes`) answers 404 for a file in the app's folder unless this client (and ``--auth``
  user) owns it; so does any other GET or HEAD whose decoded URL names a file in that folder;
- deep links are off (Gradio's ``deep_link`` route would snapshot any session's outputs for anyone): 404;
- ``/gradio_api/heartbeat/<session>`` is counted while open: a session with an open tab never expires.

Installed through ``launch(app_kwargs={"middleware": [...]})`` (FastAPI's own option), so it runs inside Gradio's
CORS and compression middlewares.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from http.cookies import CookieError, SimpleCookie
from urllib.parse import unquote

from starlette.convertors import PathConvertor
from starlette.routing import BaseRoute, Match, Route

from demos.sessions import OWNER_COOKIE, Owner, SessionFiles, session_key

API = "/gradio_api/"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")
CLOSED_ENDPOINTS = ("deep_link",)  # route endpoints answered with 404 (see the module doc)


def all_routes(routes) -> Iterator[BaseRoute]:
    """Every leaf route of an app, through included routers and mounts (Gradio nests its API in a router)."""
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's included router
        if inner is not None:
            yield from all_routes(inner.routes)
        elif not isinstance(route, Route) and getattr(route, "routes", None):
            yield from all_routes(route.routes)  # a Mount
        else:
            yield route


def file_routes(app) -> list[tuple[Route, list[str]]]:
    """The GET/HEAD routes of ``app`` that take a file path (a ``{name:path}`` parameter), with those parameters'
    names: every way the app could hand out a file's bytes, read from the route table itself."""
    found = []
    for route in all_routes(getattr(app, "routes", ())):
        params = [name for name, conv in (getattr(route, "param_convertors", None) or {}).items()
                  if isinstance(conv, PathConvertor)]
        if params and {"GET", "HEAD"} & set(getattr(route, "methods", None) or ()):
            found.append((route, params))
    return found


def _decoded(text: str) -> str:
    """``text`` URL-decoded until it no longer changes (a double-encoded path is still a path)."""
    for _ in range(4):
        plain = unquote(text)
        if plain == text:
            break
        text = plain
    return text


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
        self._routes: tuple[object, list[tuple[Route, list[str]]], list[BaseRoute]] | None = None

    def _table(self, app) -> tuple[list[tuple[Route, list[str]]], list[BaseRoute]]:
        """The app's file routes and closed routes, read once (the route table is complete once serving starts)."""
        if app is None:
            return [], []
        if self._routes is None or self._routes[0] is not app:
            closed = [r for r in all_routes(getattr(app, "routes", ()))
                      if getattr(getattr(r, "endpoint", None), "__name__", "") in CLOSED_ENDPOINTS]
            self._routes = (app, file_routes(app), closed)
        return self._routes[1], self._routes[2]

    def _refused(self, scope, owner: Owner) -> bool:
        """True when this GET/HEAD would read a file in the app's folder that ``owner`` does not own."""
        candidates = []
        for route, params in self._table(scope.get("app"))[0]:
            match, child = route.matches(scope)
            if match != Match.NONE:
                candidates += [str(child.get("path_params", {}).get(name, "")) for name in params]
        # Any other route (or a query parameter) that names a file of ours, however it is encoded.
        url = _decoded(scope.get("path", "")) + "?" + _decoded(scope.get("query_string", b"").decode("latin-1"))
        url = os.path.normpath(url)
        for root in {str(self.files.root()), os.path.realpath(self.files.root())}:
            if (at := url.find(root)) >= 0:
                candidates.append(re.split(r"[?&#]", url[at:], maxsplit=1)[0])
        for target in candidates:
            target = _decoded(target)
            if target.startswith(("http://", "https://")) or not target:
                continue
            if self.files.may_serve(target, owner) is False:
                return True
        return False

    def _closed(self, scope) -> bool:
        return any(route.matches(scope)[0] == Match.FULL for route in self._table(scope.get("app"))[1])

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
        if method in ("GET", "HEAD") and (self._refused(scope, owner) or self._closed(scope)):
            await _not_found(send)
            return
        if rest is not None and rest.rstrip("/") == "upload" and method == "POST":
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
