"""A webhook receiver on loopback for tests: records every POST (headers, raw body) and answers
``200`` unless scripted otherwise (``script(500, 500)``: the next two requests get 500), or
holds every request until ``release()`` (a receiver that hangs).

Usage::

    async with WebhookReceiver() as hooks:          # http://127.0.0.1:<port>
        ...  # server with webhooks={"allowed_hosts": [hooks.origin], "hooks": [{"url": hooks.url}]}
        got = await hooks.wait_for(lambda d: d.event["type"] == "call.ring")
        got.headers["x-signature"], got.body, got.status
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

TIMEOUT = 10.0


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


class WebhookReceiver:
    def __init__(self, path: str = "/hooks/appliance") -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.path = path
        self.attempts: list[Delivery] = []  # every request, with the status it got
        self.holding = 0
        self._script: deque[int] = deque()
        self.location: str | None = None  # sent with a scripted 3xx
        self._open = asyncio.Event()  # cleared: requests wait
        self._open.set()
        self._changed = asyncio.Condition()
        self._server = uvicorn.Server(
            uvicorn.Config(
                self._app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                interface="asgi3",
            )
        )
        self._serving: asyncio.Task[None] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + self.path

    @property
    def delivered(self) -> list[Delivery]:
        return [d for d in self.attempts if 200 <= d.status < 300]

    def script(self, *statuses: int) -> None:
        self._script.extend(statuses)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def wait_for(
        self, match: Callable[[Delivery], bool], count: int = 1, within: float = TIMEOUT
    ) -> list[Delivery]:
        """The accepted deliveries matching ``match``, once there are ``count`` of them."""

        def found() -> list[Delivery]:
            return [d for d in self.delivered if match(d)]

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(found()) >= count)
        return found()

    async def __aenter__(self) -> WebhookReceiver:
        self._serving = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(TIMEOUT):
            while not self._server.started:
                if self._serving.done():
                    self._serving.result()
                await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release()
        self._server.should_exit = True
        if self._serving is not None:
            await self._serving

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = bool(msg.get("more_body"))
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status = self._script.popleft() if self._script else 200
        if scope["path"] != self.path or scope["method"] != "POST":
            status = 404
        self.holding += 1
        try:
            await self._open.wait()
        finally:
            self.holding -= 1
        async with self._changed:
            self.attempts.append(Delivery(headers, body, status))
            self._changed.notify_all()
        extra = []
        if 300 <= status < 400 and self.location is not None:
            extra.append((b"location", self.location.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b""})
