"""Slow and greedy HTTP clients: read timeouts and a cap on connections per address.

uvicorn has no request read timeout: a socket that sends half a request header and then a byte
every few seconds (or nothing at all) was held forever, and one address could open as many as
it liked. ``uvicorn_options(settings)`` gives the server a protocol class that

- closes a connection whose request header is not complete ``http_header_timeout_seconds``
  after its first byte (or after the connection opened), answering 408 first;
- closes one whose request body is not complete ``http_body_timeout_seconds`` after its header;
- refuses (503, closed) a connection from an address that already has
  ``max_connections_per_address`` open ones (WebSockets included), except the addresses in
  ``unlimited_addresses`` (loopback by default: a reverse proxy on the same host);

and caps WebSocket messages at ``ws_max_frame_bytes`` inside the WebSocket library, so an
oversized frame is refused from its header instead of being buffered first.

This is the one place that relies on uvicorn's HTTP protocol internals: it subclasses uvicorn's
``HttpToolsProtocol`` (or ``H11Protocol`` without httptools) and reads ``self.cycle`` (its
``more_body`` and ``response_complete``) and ``self.transport``. ``TESTED_UVICORN`` says which
releases that was checked against; another version logs a warning at import, and
``tests/server/test_slow_clients.py`` exercises each hook with both protocol classes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import uvicorn

log = logging.getLogger(__name__)

TESTED_UVICORN = ((0, 30), (0, 55))  # oldest and newest minor version checked


def _version(text: str) -> tuple[int, int]:
    parts = [*text.split("."), "0", "0"][:2]
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


if not TESTED_UVICORN[0] <= _version(uvicorn.__version__) <= TESTED_UVICORN[1]:
    log.warning(
        "uvicorn %s is not a version httpguard.py was checked against (%s to %s): "
        "the slow-client timeouts may not apply",
        uvicorn.__version__,
        ".".join(map(str, TESTED_UVICORN[0])),
        ".".join(map(str, TESTED_UVICORN[1])),
    )


def _answer(status: str, message: str) -> bytes:
    body = json.dumps({"code": -1, "message": message, "StatusCode": int(status[:3])}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class AddressCounter:
    """Open connections per client address (their transports: a WebSocket keeps its HTTP one)."""

    def __init__(self, limit: int, unlimited: frozenset[str]) -> None:
        self.limit = limit
        self.unlimited = unlimited
        self.open: dict[str, set[asyncio.BaseTransport]] = {}
        self._seen = 0

    def admit(self, host: str | None, transport: asyncio.BaseTransport) -> bool:
        if host is None or self.limit <= 0 or host in self.unlimited:
            return True
        self._seen += 1
        if self._seen % 1000 == 0:  # forget addresses whose connections all closed
            for key in [k for k, v in self.open.items() if all(t.is_closing() for t in v)]:
                del self.open[key]
        mine = self.open.setdefault(host, set())
        mine.difference_update([t for t in mine if t.is_closing()])
        if len(mine) >= self.limit:
            return False
        mine.add(transport)
        return True

    def count(self, host: str) -> int:
        return sum(1 for t in self.open.get(host, ()) if not t.is_closing())


class _Guard:
    """Mixed into uvicorn's HTTP protocol class (see the module docstring)."""

    header_timeout: float
    body_timeout: float
    counter: AddressCounter
    # Provided by uvicorn's protocol:
    transport: asyncio.Transport
    cycle: Any
    loop: asyncio.AbstractEventLoop

    _phase: str | None = None
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) and peer else None
        if not self.counter.admit(host, transport):
            log.warning(
                "client %s has %d connections open: refusing another", host, self.counter.limit
            )
            transport.write(_answer("503 Service Unavailable", "too many connections"))
            transport.close()
            return
        self._arm("header", self.header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _track(self) -> None:
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            self._disarm()  # closed, or upgraded to a WebSocket (its own timeouts apply)
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            # Bytes of a request whose header is not complete yet.
            if self._phase != "header":
                self._arm("header", self.header_timeout)
        elif cycle.more_body:
            if self._phase != "body":
                self._arm("body", self.body_timeout)
        else:
            self._disarm()  # the whole request is in: the app's turn

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._timer = self.loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._phase = None

    def _expired(self, phase: str) -> None:
        self._timer = None
        transport = self.transport
        if transport.is_closing() or transport.get_protocol() is not self:
            return
        peer = transport.get_extra_info("peername")
        seconds = self.header_timeout if phase == "header" else self.body_timeout
        log.info("client %s: request %s not complete within %.0f s: closing", peer, phase, seconds)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            transport.write(_answer("408 Request Timeout", f"request {phase} took too long"))
        transport.close()


def protocol_class(
    header_timeout: float,
    body_timeout: float,
    counter: AddressCounter,
    base: type[asyncio.Protocol] | None = None,
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class (``base``; default: the one uvicorn would pick) guarded."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    attrs = {"header_timeout": header_timeout, "body_timeout": body_timeout, "counter": counter}
    return type(f"Guarded{base.__name__}", (_Guard, base), attrs)


def uvicorn_options(settings: Any) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` of a call server with these settings."""
    limits = settings.limits
    counter = AddressCounter(
        limits.max_connections_per_address, frozenset(limits.unlimited_addresses)
    )
    return {
        "http": protocol_class(
            limits.http_header_timeout_seconds, limits.http_body_timeout_seconds, counter
        ),
        "ws_max_size": settings.ws_max_frame_bytes,
    }
