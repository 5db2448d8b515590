"""What every request to the admin API passes before routing (an ASGI middleware).

- **Trailing slash.** MBG's paths end with ``/``; some clients drop it (or add one to
  ``/mslrest/initiate``). A redirect does not help a signed request: the client signed
  the URI it sent, and a client that follows the redirect re-sends the same signature for
  another URI, which then fails as "invalid signature" (issue 14). So a path that matches
  no route, but does with the slash added or removed, is served as that route; the raw
  path (what the signature covers, see :func:`limen.api.auth.raw_path`) is left as sent.
- **Bodies are bounded and strict JSON.** A body larger than ``max_body`` is 413. A JSON
  body with ``NaN``/``Infinity`` (not JSON, RFC 8259 §6, but Python's parser takes them)
  or with control characters, NUL or lone surrogates in any string is 422, whatever the
  database behind would have done with it (PostgreSQL refuses NUL, SQLite stores it).
- **No control characters in the URL.** A path or query that decodes to control
  characters names nothing Limen stores: 404 for a path, 422 for a query.

Every refusal is a JSON ``{"detail": ...}`` answer on a connection that stays usable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# C0 controls, DEL, C1 controls and UTF-16 surrogates (never valid in UTF-8 text).
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Fields whose values are multi-line by nature (PEM): tab, LF and CR are fine there.
_MULTILINE_FIELDS = frozenset({"rsa_public_key"})
_MULTILINE_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")

MAX_BODY = 1 << 20


class BadInput(ValueError):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def _no_constants(name: str) -> Any:
    raise BadInput(
        422,
        [
            {
                "loc": ["body"],
                "msg": f"{name} is not a JSON number (RFC 8259 §6); send a finite number",
                "type": "json_invalid",
            }
        ],
    )


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise BadInput(
            422,
            [
                {
                    "loc": ["body"],
                    "msg": f"number {text[:32]} is out of range (not a finite number)",
                    "type": "json_invalid",
                }
            ],
        )
    return value


def _check_strings(value: Any, loc: list[str | int]) -> None:
    """Raise BadInput naming the first string (key or value) with a forbidden character."""
    if isinstance(value, str):
        field = next((p for p in reversed(loc) if isinstance(p, str)), "")
        pattern = _MULTILINE_BAD if field in _MULTILINE_FIELDS else _BAD_CHARS
        found = pattern.search(value)
        if found is not None:
            raise BadInput(
                422,
                [
                    {
                        "loc": ["body", *loc],
                        "msg": f"control character U+{ord(found.group()):04X} is not allowed",
                        "type": "string_control_character",
                    }
                ],
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_strings(key, [*loc, key])
            _check_strings(item, [*loc, key])
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_strings(item, [*loc, index])


def check_json_body(body: bytes) -> None:
    """Raise :class:`BadInput` (422) for a JSON body Limen must not take."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(
            422, [{"loc": ["body"], "msg": "body is not UTF-8", "type": "json_invalid"}]
        ) from None
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite)
    except ValueError as exc:
        if isinstance(exc, BadInput):
            raise
        return  # not JSON at all: FastAPI answers that with its own 422
    _check_strings(value, [])


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class RequestGuard:
    """The ASGI middleware; ``routes`` are the app's, for the trailing-slash rule."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute] = (),
        max_body: int = MAX_BODY,
        large_bodies: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        # The live list: routes added after the middleware (a web console) count too.
        self.routes = routes
        self.max_body = max_body
        # Path prefixes allowed larger bodies (a backup to restore).
        self.large_bodies = large_bodies or {}

    def _matches(self, scope: Scope, path: str) -> bool:
        probe = {**scope, "path": path}
        for route in self.routes:
            match, _child = route.matches(probe)
            if match is not Match.NONE:
                return True
        return False

    def _route_path(self, scope: Scope) -> str | None:
        """The path to route: as sent, or with the trailing slash toggled; None: no route
        either way (the router's 404)."""
        path: str = scope["path"]
        if self._matches(scope, path):
            return path
        other = path[:-1] if path.endswith("/") and len(path) > 1 else path + "/"
        return other if self._matches(scope, other) else None

    async def _refuse(self, send: Send, error: BadInput) -> None:
        body = json.dumps({"detail": error.detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if _BAD_CHARS.search(path):
            await self._refuse(
                send, BadInput(404, "no such resource: the path contains control characters")
            )
            return
        query = scope.get("query_string", b"").decode("latin-1")
        if query and _BAD_CHARS.search(unquote(query, errors="surrogateescape")):
            await self._refuse(
                send,
                BadInput(
                    422,
                    [
                        {
                            "loc": ["query"],
                            "msg": "control characters are not allowed",
                            "type": "string_control_character",
                        }
                    ],
                ),
            )
            return
        routed = self._route_path(scope)
        if routed is not None and routed != path:
            scope = {**scope, "path": routed}
        if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self.max_body
        for prefix, size in self.large_bodies.items():
            if scope["path"].startswith(prefix):
                limit = size
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._refuse(send, BadInput(413, f"request body larger than {limit} bytes"))
            return
        if not _is_json(scope):
            # Not parsed here, so not buffered here either: a handler reads it after the
            # caller is authenticated (a large upload costs memory only then).
            await self.app(scope, _limited(receive, limit), send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, BadInput(413, f"request body larger than {limit} bytes"))
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if body:
            try:
                check_json_body(body)
            except BadInput as exc:
                await self._refuse(send, exc)
                return
        await self.app(scope, _replay([body], None, receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _limited(receive: Receive, limit: int) -> Receive:
    """A ``receive`` that ends the request (as a disconnect) past ``limit`` body bytes:
    for a chunked body, whose size is not declared up front."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                return {"type": "http.disconnect"}
        return message

    return limited


def _replay(bodies: list[bytes], pending: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then defers to the server's."""
    queue: list[Message] = [{"type": "http.request", "body": b, "more_body": False} for b in bodies]
    if pending is not None:
        queue.append(pending)

    async def replay() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replay
