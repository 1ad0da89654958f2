"""The DASH origin: a Starlette app serving one content directory over HTTP/1.1.

What a client can rely on:

* ``GET``/``HEAD`` of any regular file under the content root, with ``Content-Length``,
  ``Accept-Ranges: bytes`` and single or multiple byte ranges (206 with ``Content-Range``; 416
  with ``Content-Range: bytes */SIZE`` when no range is satisfiable). Of several ranges, the
  unsatisfiable ones are dropped and the rest served; overlapping ones are merged. A malformed
  Range (another unit, bad syntax, last < first) or one of more than :data:`MAX_RANGES` ranges
  is ignored: 200 with the whole file.
* Types: ``.mpd`` application/dash+xml, ``.mp4`` (init segments) video/mp4, ``.m4s`` (media
  segments) video/iso.segment (the IANA type for ISO BMFF media segments), ``.json``
  application/json, anything else application/octet-stream.
* ``Cache-Control: no-store`` on every answer: an emulated session must download every byte.
  Bodies are never compressed, so bytes on the wire equal the sizes in ``video.json``.
* CORS open to any origin (a dash.js page on another port), preflights answered with 204;
  ``Content-Length``/``Content-Range`` are exposed to scripts.
* Nothing outside the root: a path with a NUL byte, a backslash or a ``.``/``..`` segment (after
  the server's one percent-decoding) is 400; dot-files, directories and symlinks resolving
  outside the root are 404. Errors are JSON ``{"detail": "..."}``.
* ``GET /healthz``: ``{"status": "ok"}``.
* The dash.js player page (``streambed play --browser``): ``GET /player.html`` and its scripts
  ``GET /_streambed/<name>`` for a fixed list of names (:data:`PLAYER_FILES`), read from the
  web folder (:func:`streambed.server.web.resolve_web_dir`, chosen when the app is made:
  ``player/web`` in a checkout, else the copy ``streambed play --install-browser`` made) and
  dash.js's build in its ``node_modules``, never from the content root and never from a path
  taken from the request. They shadow content files of those names. The page and its decision
  worker are sent cross-origin isolated (COOP ``same-origin``, COEP ``require-corp``) so that
  the page may use SharedArrayBuffer. Without dash.js installed, ``/player.html`` and dash.js
  answer 503 naming ``streambed play --install-browser`` (the origin then needs a restart).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streambed.core.errors import ConfigError
from streambed.server.web import (
    DASHJS_FILE,
    INSTALL_COMMAND,
    ISOLATED,
    ISOLATED_FILES,
    PACKAGE_WEB_DIR,
    PLAYER_ASSETS,
    PLAYER_FILES,
    PLAYER_PAGE,
    find_web_dir,
)

MEDIA_TYPES: dict[str, str] = {
    ".mpd": "application/dash+xml",
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".json": "application/json",
}
DEFAULT_MEDIA_TYPE = "application/octet-stream"
ALLOWED_METHODS = "GET, HEAD, OPTIONS"
EXPOSED_HEADERS = "Content-Length, Content-Range, Accept-Ranges, Content-Type"
PREFLIGHT_MAX_AGE_S = 600
_RANGE_SPEC = re.compile(r"\s*(?:(\d+)-(\d*)|-(\d+))\s*")
MAX_RANGES = 32
"""Most ranges in one Range header; a longer list is ignored (RFC 9110 allows it)."""
_BIG = 10**18  # any position past every file: longer digit strings read as this

WEB_DIR = PACKAGE_WEB_DIR
"""The dash.js player's shipped files (``player/web``); see :mod:`streambed.server.web` for the
folder actually served."""
SETUP_HINT = (
    "the dash.js player is not installed ({missing} is missing): run "
    + INSTALL_COMMAND
    + " and restart the origin (in a checkout: scripts/setup.sh)"
)


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= 18 else _BIG


def parse_range(value: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable ``(first, last)`` byte positions of a ``bytes=`` Range header for a file
    of ``size`` bytes, clipped to it (RFC 9110 14.1.1); None when the header is to be ignored
    (malformed, another unit, more than :data:`MAX_RANGES` ranges)."""
    unit, sep, specs = value.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = specs.split(",")
    if len(parts) > MAX_RANGES:
        return None
    found = []
    for spec in parts:
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None:
            return None
        first_text, last_text, suffix = match.groups()
        if suffix is not None:
            length = _position(suffix)
            first, last = max(size - length, 0), size - 1
            if length == 0:
                continue
        else:
            first = _position(first_text)
            last = _position(last_text) if last_text else _BIG
            if last < first:
                return None
            last = min(last, size - 1)
        if first < size:
            found.append((first, last))
    return found


class _FileResponse(FileResponse):
    """FileResponse whose Range handling follows :func:`parse_range`: an invalid Range header
    is ignored (200 with the whole file, as RFC 9110 allows, where Starlette answers 400) and
    unsatisfiable parts of a multi-range request are dropped (Starlette answers 416)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.stat_result is None:  # always given here; Starlette would stat the file itself
            self.stat_result = os.stat(self.path)
        size = self.stat_result.st_size
        headers = []
        for key, value in scope["headers"]:
            if key.lower() != b"range":
                headers.append((key, value))
                continue
            ranges = parse_range(value.decode("latin-1"), size)
            if ranges is None:
                continue
            # Rewritten in canonical form, so Starlette sees only satisfiable ranges (or, when
            # there are none, one that makes it answer 416).
            canonical = ",".join(f"{a}-{b}" for a, b in ranges) or f"{size}-"
            headers.append((key, f"bytes={canonical}".encode()))
        await super().__call__({**scope, "headers": headers}, receive, send)


class OriginHeaders:
    """Adds CORS and no-store headers to every answer and answers every OPTIONS request.

    Pure ASGI (not BaseHTTPMiddleware), so file bodies still stream untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            request_headers = dict(scope["headers"])
            asked = request_headers.get(b"access-control-request-headers", b"").decode("latin-1")
            headers = {
                "Allow": ALLOWED_METHODS,
                "Access-Control-Allow-Methods": ALLOWED_METHODS,
                "Access-Control-Allow-Headers": asked or "Range",
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
            }
            await Response(status_code=204, headers=headers)(scope, receive, self._wrap(send))
            return
        await self.app(scope, receive, self._wrap(send))

    @staticmethod
    def _wrap(send: Send) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"cache-control", b"access-control-allow-origin")
                ]
                headers += [
                    (b"cache-control", b"no-store"),
                    (b"access-control-allow-origin", b"*"),
                    (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
                    (b"timing-allow-origin", b"*"),  # lets a page time each segment download
                ]
                message = {**message, "headers": headers}
            await send(message)

        return send_with_headers


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def resolve_request_path(root: Path, url_path: str) -> Path | JSONResponse:
    """The file under ``root`` that the (already percent-decoded) ``url_path`` names, or the
    error answer. ``root`` must be resolved. Never follows anything out of ``root``."""
    if "\x00" in url_path:
        return _error(400, "path contains a NUL byte")
    if "\\" in url_path:
        return _error(400, "path contains a backslash")
    # Empty segments ("//") are dropped rather than kept: joined onto root, a segment starting
    # with "/" would make the path absolute.
    parts = [part for part in url_path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        return _error(400, "path contains a '.' or '..' segment")
    shown = "/" + "/".join(parts)
    if not parts or any(part.startswith(".") for part in parts):
        return _error(404, f"not found: {shown}")
    try:
        resolved = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a name too long
        return _error(404, f"not found: {shown}")
    # resolve() has followed every symlink: what matters is where the file really is.
    if not resolved.is_relative_to(root) or not resolved.is_file():
        return _error(404, f"not found: {shown}")
    return resolved


def _player_file(web: Path, name: str, relative: str, media_type: str) -> Response:
    """One of the player's fixed files (``relative`` under ``web``), or 503/404 saying why."""
    dashjs = web / DASHJS_FILE
    if (name == PLAYER_PAGE or relative == DASHJS_FILE) and not dashjs.is_file():
        return _error(503, SETUP_HINT.format(missing=dashjs))
    path = web / relative
    try:
        stat = os.stat(path)
    except OSError:
        return _error(404, f"not found: player file {relative} is missing from {web}")
    headers = ISOLATED if name in ISOLATED_FILES else None
    return _FileResponse(path, stat_result=stat, media_type=media_type, headers=headers)


def create_app(content_dir: Path, web_dir: Path | None = None) -> Starlette:
    """An ASGI app serving the files under ``content_dir`` (see the module docstring), and the
    dash.js player's page from ``web_dir`` (default: the folder
    :func:`streambed.server.web.find_web_dir` finds, else :data:`WEB_DIR`, whose page is 503)."""
    root = Path(content_dir).resolve()
    if not root.is_dir():
        raise ConfigError(f"--content {content_dir}: not a directory")
    if web_dir is None:
        web_dir = find_web_dir() or WEB_DIR  # no player installed: the origin serves content
    web = Path(web_dir).resolve()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def player_page(request: Request) -> Response:
        return _player_file(web, PLAYER_PAGE, PLAYER_PAGE, "text/html; charset=utf-8")

    async def player_asset(request: Request) -> Response:
        name = request.path_params["name"]
        found = PLAYER_FILES.get(name)
        if found is None:  # a lookup, never a path: nothing else is reachable from here
            return _error(404, f"not found: {PLAYER_ASSETS}/{name} is not a player file")
        return _player_file(web, name, *found)

    async def serve_file(request: Request) -> Response:
        url_path = request.path_params["path"]
        found = resolve_request_path(root, url_path)
        if isinstance(found, Response):
            return found
        try:
            stat = os.stat(found)
        except OSError:  # removed since resolve_request_path looked
            return _error(404, f"not found: /{url_path}")
        media_type = MEDIA_TYPES.get(found.suffix.lower(), DEFAULT_MEDIA_TYPE)
        # FileResponse handles Range/If-Range, 206/416 and HEAD (headers only).
        return _FileResponse(found, stat_result=stat, media_type=media_type)

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route(f"/{PLAYER_PAGE}", player_page, methods=["GET", "HEAD"]),
            Route(PLAYER_ASSETS + "/{name}", player_asset, methods=["GET", "HEAD"]),
            Route("/{path:path}", serve_file, methods=["GET", "HEAD"]),
        ]
    )
    app.add_middleware(OriginHeaders)
    app.state.content_root = root
    app.state.web_root = web
    return app
