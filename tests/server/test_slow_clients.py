"""Slow and greedy HTTP clients (``appliance/server/api/httpguard.py``): a header or body that trickles
in is cut off, one address cannot hold more than its share of connections, and none of it
touches a request that arrives in time or a WebSocket once upgraded. Each hook is exercised with
both of uvicorn's HTTP protocol classes (httptools, h11)."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from appliance.server.api.httpguard import AddressCounter, protocol_class
from appliance.server.app import create_app
from appliance.server.auth import create_token
from appliance.server.settings import ServerSettings

DEADLINE = 15.0  # generous: only a bound on waiting for the server to act
BASES = [pytest.param(HttpToolsProtocol, id="httptools"), pytest.param(H11Protocol, id="h11")]


class Guarded:
    def __init__(self, port: int, counter: AddressCounter, settings: ServerSettings) -> None:
        self.port = port
        self.counter = counter
        self.settings = settings

    async def raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@asynccontextmanager
async def guarded(
    tmp_path: Path,
    base: type[asyncio.Protocol],
    *,
    header: float = 0.5,
    body: float = 0.5,
    per_address: int = 0,
) -> AsyncIterator[Guarded]:
    settings = ServerSettings.model_validate(
        {
            "api_key": "k",
            "api_secret": secrets.token_urlsafe(32),
            "state_dir": tmp_path / "state",
            "users": [{"id": "alice"}],
        }
    )
    counter = AddressCounter(per_address, frozenset())
    config = uvicorn.Config(
        create_app(settings),
        lifespan="on",
        log_level="warning",
        http=protocol_class(header, body, counter, base),
        ws_ping_interval=None,
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.01)
    try:
        yield Guarded(sock.getsockname()[1], counter, settings)
    finally:
        server.should_exit = True
        await task


async def _closed_after(reader: asyncio.StreamReader, trickle: Any = None) -> tuple[float, bytes]:
    """Seconds until the server closes the connection (and what it said), while ``trickle()``
    keeps sending; fails at DEADLINE (the connection was held)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    got = b""
    while loop.time() - start < DEADLINE:
        if trickle is not None:
            await trickle()
        try:
            chunk = await asyncio.wait_for(reader.read(4096), 0.2)
        except TimeoutError:
            continue
        except ConnectionError:
            return loop.time() - start, got
        if not chunk:
            return loop.time() - start, got
        got += chunk
    raise AssertionError(f"the server held the connection for {DEADLINE} s")


@pytest.mark.parametrize("base", BASES)
async def test_a_header_sent_a_byte_at_a_time_is_cut_off(tmp_path: Path, base: Any) -> None:
    async with guarded(tmp_path, base) as srv:
        reader, writer = await srv.raw()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            writer.write(b"X")
            await writer.drain()

        _, said = await _closed_after(reader, trickle)
        assert said.startswith(b"HTTP/1.1 408"), said
        writer.close()


@pytest.mark.parametrize("base", BASES)
async def test_a_connection_that_sends_nothing_is_closed(tmp_path: Path, base: Any) -> None:
    async with guarded(tmp_path, base) as srv:
        reader, writer = await srv.raw()
        _, said = await _closed_after(reader)
        assert said.startswith(b"HTTP/1.1 408"), said
        writer.close()


@pytest.mark.parametrize("base", BASES)
async def test_a_body_sent_a_byte_at_a_time_is_cut_off(tmp_path: Path, base: Any) -> None:
    async with guarded(tmp_path, base, header=30) as srv:
        reader, writer = await srv.raw()
        writer.write(
            b"POST /api/v2/users?api_key=k HTTP/1.1\r\nHost: x\r\n"
            b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"
        )

        async def trickle() -> None:
            writer.write(b" ")
            await writer.drain()

        await _closed_after(reader, trickle)
        writer.close()


@pytest.mark.parametrize("base", BASES)
async def test_requests_in_time_and_keep_alive_are_untouched(tmp_path: Path, base: Any) -> None:
    async with guarded(tmp_path, base, header=1.0) as srv:
        reader, writer = await srv.raw()
        for _ in range(3):  # each request's header takes 0.6 s: under the limit, over it summed
            for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.2)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.close()


@pytest.mark.parametrize("base", BASES)
async def test_a_websocket_outlives_the_header_timeout(tmp_path: Path, base: Any) -> None:
    async with guarded(tmp_path, base, header=0.3, body=0.3) as srv:
        token = create_token(srv.settings.api_secret or "", "alice")
        url = f"ws://127.0.0.1:{srv.port}/api/v2/connect?api_key=k"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"token": token, "user_details": {"id": "alice"}}))
            assert json.loads(await ws.recv())["type"] == "connection.ok"
            await asyncio.sleep(1.0)  # past both timeouts: they no longer apply to this socket
            await ws.send(json.dumps({"type": "health.check", "id": 1}))
            assert json.loads(await ws.recv())["reply_to"] == 1


@pytest.mark.parametrize("base", BASES)
async def test_one_address_gets_a_bounded_number_of_connections(tmp_path: Path, base: Any) -> None:
    async with guarded(tmp_path, base, header=30, per_address=4) as srv:
        token = create_token(srv.settings.api_secret or "", "alice")
        url = f"ws://127.0.0.1:{srv.port}/api/v2/connect?api_key=k"
        ws = await websockets.connect(url)  # a WebSocket counts too
        await ws.send(json.dumps({"token": token, "user_details": {"id": "alice"}}))
        assert json.loads(await ws.recv())["type"] == "connection.ok"
        held = [await srv.raw() for _ in range(3)]
        reader, writer = await srv.raw()
        _, said = await _closed_after(reader)
        assert said.startswith(b"HTTP/1.1 503"), said
        assert srv.counter.count("127.0.0.1") == 4
        # One closes: the next is let in.
        await ws.close()
        for _ in range(100):
            if srv.counter.count("127.0.0.1") < 4:
                break
            await asyncio.sleep(0.02)
        reader, writer = await srv.raw()
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), DEADLINE)).startswith(b"HTTP/1.1 200")
        for _, w in [*held, (reader, writer)]:
            w.close()
