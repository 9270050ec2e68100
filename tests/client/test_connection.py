"""The WebSocket loop against a small scripted WebSocket server on loopback, with an injected
clock and random: reconnect delays, heartbeats, dead-socket detection, token refusal."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from appliance.client.backoff import Backoff
from appliance.client.connection import Connection
from appliance.client.events import EventHub
from appliance.client.rest import RestTransport
from appliance.clock import ManualClock
from tests.support.poll import until


class FixedRandom:
    def random(self) -> float:
        return 1.0


class ScriptedHub:
    """Answers the first frame with connection.ok (or an error) and records what it got."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.connections: list[ServerConnection] = []
        self.refuse = False
        self.accepted = asyncio.Event()

    async def handler(self, ws: ServerConnection) -> None:
        first = json.loads(await ws.recv())
        self.frames.append(first)
        if self.refuse:
            await ws.send(
                json.dumps(
                    {
                        "type": "error",
                        "error": {"code": 5, "message": "token expired", "StatusCode": 401},
                    }
                )
            )
            await ws.close()
            return
        self.connections.append(ws)
        await ws.send(
            json.dumps(
                {
                    "type": "connection.ok",
                    "connection_id": f"c{len(self.connections)}",
                    "me": {"id": "door"},
                }
            )
        )
        self.accepted.set()
        async for raw in ws:
            self.frames.append(json.loads(raw))


@pytest.fixture
async def hub_server() -> AsyncIterator[tuple[ScriptedHub, str]]:
    hub = ScriptedHub()
    async with serve(hub.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield hub, f"http://127.0.0.1:{port}"


def make(
    base_url: str, clock: ManualClock, **kwargs: Any
) -> tuple[Connection, EventHub, RestTransport]:
    rest = RestTransport(base_url, "key", "tok-1")
    hub = EventHub()
    conn = Connection(
        rest,
        hub,
        user_id="door",
        clock=clock,
        backoff=Backoff(base=1.0, cap=8.0, random=FixedRandom()),
        heartbeat_interval=10.0,
        **kwargs,
    )
    return conn, hub, rest


async def test_reconnects_after_the_backoff_delay_and_not_before(
    hub_server: tuple[ScriptedHub, str],
) -> None:
    hub, url = hub_server
    clock = ManualClock()
    conn, events, rest = make(url, clock)
    sub = events.subscribe({"connection.ok", "connection.lost"})
    assert await conn.wait_connected(5) == "c1"
    assert hub.frames[0] == {"token": "tok-1", "user_details": {"id": "door"}}
    first = await sub.get()
    assert (first.connection_id, first.reconnected) == ("c1", False)

    await hub.connections[0].close()
    assert (await sub.get()).type == "connection.lost"
    await asyncio.sleep(0.1)
    assert len(hub.connections) == 1  # waiting on the injected clock
    clock.advance(0.99)
    await asyncio.sleep(0.1)
    assert len(hub.connections) == 1
    clock.advance(0.02)
    event = await asyncio.wait_for(sub.get(), 5)
    assert (event.type, event.connection_id, event.reconnected) == ("connection.ok", "c2", True)
    assert conn.backoff.attempt == 0
    await conn.close()
    await rest.aclose()


async def test_delays_double_while_the_server_refuses(hub_server: tuple[ScriptedHub, str]) -> None:
    hub, url = hub_server
    clock = ManualClock()
    refreshed: list[str] = []

    async def new_token() -> str:
        refreshed.append("tok-2")
        return "tok-2"

    conn, _events, rest = make(url, clock)
    rest.token_provider = new_token
    hub.refuse = True
    conn.start()
    for attempt, delay in enumerate([1.0, 2.0, 4.0, 8.0, 8.0], start=1):
        await until(lambda a=attempt: len(hub.frames) == a and conn.backoff.attempt == a)
        clock.advance(delay)
    assert len(refreshed) >= 4
    assert hub.frames[-1]["token"] == "tok-2"
    hub.refuse = False
    clock.advance(8.0)
    await conn.wait_connected(5)
    assert conn.backoff.attempt == 0
    await conn.close()
    await rest.aclose()


async def test_heartbeats_and_a_silent_socket_is_declared_dead(
    hub_server: tuple[ScriptedHub, str],
) -> None:
    hub, url = hub_server
    clock = ManualClock()
    conn, events, rest = make(url, clock)
    sub = events.subscribe({"connection.lost"})
    await conn.wait_connected(5)
    await asyncio.sleep(0.05)  # let the heartbeat task start sleeping on the clock
    clock.advance(10.0)
    await until(lambda: any(f.get("type") == "health.check" for f in hub.frames))
    assert next(f for f in hub.frames if f.get("type") == "health.check")["connection_id"] == "c1"
    # The scripted server never sends anything: after dead_after (30 s) the client gives up on it.
    clock.advance(10.0)
    await asyncio.sleep(0.05)
    assert conn.connected
    clock.advance(10.0)
    await asyncio.sleep(0.05)
    clock.advance(10.0)
    assert (await asyncio.wait_for(sub.get(), 5)).type == "connection.lost"
    await conn.close()
    await rest.aclose()


async def test_send_signal_envelope_and_close_is_idempotent(
    hub_server: tuple[ScriptedHub, str],
) -> None:
    hub, url = hub_server
    conn, _events, rest = make(url, ManualClock())
    await conn.wait_connected(5)
    await conn.send_signal("default:x", "p-2", {"kind": "offer", "sdp": "v=0"})
    await until(lambda: len(hub.frames) == 2)
    assert hub.frames[1] == {
        "type": "signal",
        "call_cid": "default:x",
        "to": "p-2",
        "signal": {"kind": "offer", "sdp": "v=0"},
    }
    await conn.close()
    await conn.close()
    assert not conn.connected
    await rest.aclose()
