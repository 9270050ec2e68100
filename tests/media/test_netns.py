"""Two participants in their own network namespaces: the link goes down for 10 s mid-call and comes
back; the offerer restarts ICE (a fresh peer connection) and media flows again.

The call server runs in namespace a (participant b reaches it over the same veth, so signaling
drops with the link too, as on a real site).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.media.sources.test import TestSource
from tests.media.video_helpers import Participant
from tests.support import poll
from tests.support.netns import VethPair, netns_pair  # noqa: F401  (fixture)
from tests.support.server import ServerHandle, running_server

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

CALL_ID = "site-7"
LINK_DOWN_SECONDS = 10.0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _start_server(
    tmp_path: Path, address: str, users: tuple[str, ...] = ("field", "hq"), **settings: Any
) -> tuple[Any, ServerHandle, asyncio.Server]:
    """In namespace a: the test server (loopback) plus a TCP forwarder on the veth address."""
    manager = running_server(tmp_path, users=list(users), **settings)
    handle = await manager.__aenter__()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", handle.port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    forwarder = await asyncio.start_server(forward, address, 0)
    return manager, handle, forwarder


async def _stop_server(manager: Any, forwarder: asyncio.Server) -> None:
    forwarder.close()
    await manager.__aexit__(None, None, None)


def last_counter(p: Participant) -> int:
    """The newest frame counter read at ``p`` (a restart brings a new track, so a new reader)."""
    return max((r.codes[-1].counter for r in p.video if r.codes), default=-1)


async def test_link_down_ten_seconds_then_ice_restart_and_media_again(
    netns_pair: VethPair,  # noqa: F811
    tmp_path: Path,
) -> None:
    net = netns_pair
    async with net.a.loop() as side_a, net.b.loop() as side_b:
        manager, srv, forwarder = await side_a.run(_start_server(tmp_path, net.a.address))
        port = forwarder.sockets[0].getsockname()[1]
        url = f"http://{net.a.address}:{port}"

        async def make(user: str, **media: Any) -> Participant:
            return Participant(url, srv.api_key, srv.user_token(user), user, CALL_ID, **media)

        async def make_field() -> Participant:
            source = TestSource(width=192, height=160, framerate=15)
            return await make("field", video=source, gate_open=True)

        field = await side_a.run(make_field())
        hq = await side_b.run(make("hq", receive_video=True, gate_open=True))
        try:
            await side_a.run(field.media.start())
            await side_b.run(hq.media.start())  # the newcomer: it offers, it restarts
            await poll.until(lambda: last_counter(hq) >= 0, within=20.0)
            await hq.video[0].wait_for(10)
            hq_peer = next(iter(hq.media.peers.values()))
            field_peer = next(iter(field.media.peers.values()))
            assert (hq_peer.offerer, field_peer.offerer) == (True, False)
            assert (hq_peer.generation, field_peer.generation) == (0, 0)

            net.link_down()
            assert not net.link_is_up()
            before = last_counter(hq)
            await asyncio.sleep(LINK_DOWN_SECONDS)
            assert last_counter(hq) - before <= 2  # nothing got through (maybe one in flight)
            assert hq_peer.state != "connected"
            net.link_up()
            up_at = time.monotonic()

            await poll.until(lambda: last_counter(hq) > before + 15, within=60)
            recovery = time.monotonic() - up_at
            assert hq_peer.state == "connected" and field_peer.state == "connected"
            assert hq_peer.restarts >= 1 and hq_peer.generation >= 1
            assert field_peer.generation >= 1  # the answerer built a fresh connection too
            counters = [c.counter for c in hq.video[-1].codes]
            assert counters[-1] > before
            print(f"media back {recovery:.2f} s after the link came up")
        finally:
            await side_b.run(hq.close())
            await side_a.run(field.close())
            await side_a.run(_stop_server(manager, forwarder))
