"""Cross-origin requests from the browser apps the operator lists in ``cors.allowed_origins``.

A Stream app served from another origin (``https://app.example``) preflights every API request:
its ``Authorization``, ``stream-auth-type`` and ``X-Stream-Client`` headers are not "simple".
None are allowed by default (the console is served from this origin and needs none). An origin
is compared exactly (scheme, host, port); ``*`` is refused in the settings, since every request
carries credentials. A preflight from an origin not listed is a JSON 403 naming the origin;
other requests from it are served without ``Access-Control-Allow-Origin`` (the browser then
withholds the answer from the page).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
# What Stream's client SDKs send, plus what our own clients send.
ALLOWED_HEADERS = (
    "authorization, content-type, stream-auth-type, x-stream-client, x-client-request-id"
)
MAX_AGE_SECONDS = "600"
# An Origin header longer than any real one is not looked up.
_MAX_ORIGIN = 512


class Cors:
    """ASGI middleware answering preflights and marking answers for the allowed origins."""

    def __init__(self, app: ASGIApp, allowed_origins: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/") for o in allowed_origins)

    def __repr__(self) -> str:
        return f"Cors({sorted(self.allowed)})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.allowed:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        raw = headers.get(b"origin")
        if raw is None:
            await self.app(scope, receive, send)
            return
        origin = raw[:_MAX_ORIGIN].decode("latin-1")
        allowed = origin in self.allowed
        preflight = scope.get("method") == "OPTIONS" and b"access-control-request-method" in headers
        if preflight:
            await self._preflight(origin, allowed)(scope, receive, send)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        await self.app(scope, receive, send_marked)

    def _preflight(self, origin: str, allowed: bool) -> Response:
        if not allowed:
            log.info("CORS preflight from %r refused (not in cors.allowed_origins)", origin[:80])
            return JSONResponse(
                {
                    "code": 17,
                    "message": f"origin {origin[:80]!r} is not in cors.allowed_origins",
                    "StatusCode": 403,
                    "details": [],
                },
                status_code=403,
                headers={"vary": "Origin"},
            )
        return Response(
            status_code=204,
            headers={
                "access-control-allow-origin": origin,
                "access-control-allow-methods": ALLOWED_METHODS,
                "access-control-allow-headers": ALLOWED_HEADERS,
                "access-control-max-age": MAX_AGE_SECONDS,
                "vary": "Origin",
            },
        )
