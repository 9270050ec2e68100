"""A Wi-Fi that silently stops passing packets: no FIN, no RST — only the heartbeat notices.

The server runs in namespace b, the device's client in namespace a; the veth between them goes
down for a while. The device must notice the dead socket by itself, keep retrying, and after the
link comes back get the ring that started meanwhile exactly once (and no replay of the older one).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from appliance.client import Backoff, Client, MemberRequest
from appliance.server.auth import create_token
from tests.support import poll
from tests.support.netns import VethPair, veth_pair

SECRET = "netns-test-secret-" * 3
API_KEY = "netns-key"
PORT = 3040


@pytest.fixture
def net() -> Iterator[VethPair]:
    with veth_pair() as pair:
        yield pair


async def _wait_healthy(base_url: str) -> None:
    async with httpx.AsyncClient(timeout=1.0) as http:
        for _ in range(300):
            try:
                if (await http.get(f"{base_url}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"server at {base_url} did not come up")


async def _next(sub: Any, within: float = 15.0) -> Any:
    return await asyncio.wait_for(sub.get(), within)


@pytest.mark.netns
@pytest.mark.e2e
async def test_silent_link_drop_is_detected_and_the_missed_ring_arrives_once(
    net: VethPair, tmp_path: Path
) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "api_key": API_KEY,
                "api_secret": SECRET,
                "host": net.b.address,
                "port": PORT,
                "state_dir": str(tmp_path / "state"),
                "users": [{"id": "door"}, {"id": "alice"}],
                "ws_health_seconds": 1.0,
            }
        )
    )
    with (tmp_path / "server.log").open("wb") as log:
        net.b.popen(
            [sys.executable, "-m", "appliance", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://{net.b.address}:{PORT}"
    device: dict[str, Any] = {}
    caller: dict[str, Any] = {}

    async def device_connects() -> None:
        await _wait_healthy(base_url)
        client = Client(
            base_url,
            API_KEY,
            create_token(SECRET, "alice"),
            heartbeat_interval=0.5,
            backoff=Backoff(base=0.2, cap=0.5),
        )
        device.update(
            client=client,
            rings=client.events("call.ring"),
            link=client.events({"connection.ok", "connection.lost"}),
        )
        await client.connect(30)
        assert (await _next(device["link"])).type == "connection.ok"

    async def caller_rings(call_id: str) -> None:
        if "client" not in caller:
            caller["client"] = Client(base_url, API_KEY, create_token(SECRET, "door"))
        await (
            caller["client"]
            .call("default", call_id)
            .create(
                member_ids=["alice"],
                members=[MemberRequest(user_id="door", role="admin")],
                settings={
                    "ring": {"incoming_call_timeout_ms": 60000, "auto_cancel_timeout_ms": 60000}
                },
                ring=True,
            )
        )

    async def device_gets_ring(cid: str) -> None:
        assert (await _next(device["rings"])).cid == cid

    async def device_notices_the_drop() -> None:
        assert (await _next(device["link"])).type == "connection.lost"

    async def device_comes_back() -> list[str]:
        client: Client = device["client"]
        assert (await _next(device["link"], 30)).type == "connection.ok"
        ring = await _next(device["rings"])
        passes = client.resync.passes
        await poll.until(
            lambda: client.resync.passes > passes, 15.0, what="a resync pass", every=0.05
        )
        await asyncio.sleep(0.5)  # room for a replay to show up, if there were one
        later = []
        while not device["rings"]._queue.empty():
            later.append(device["rings"]._queue.get_nowait().cid)
        return [ring.cid, *later]

    async with net.a.loop() as side_a, net.b.loop() as side_b:
        try:
            await side_a.run(device_connects())
            await side_b.run(caller_rings("before-drop"))
            await side_a.run(device_gets_ring("default:before-drop"))

            net.link_down()
            await side_a.run(device_notices_the_drop())
            await side_b.run(caller_rings("while-down"))
            await asyncio.sleep(1.0)  # a few failed reconnects
            net.link_up()
            assert await side_a.run(device_comes_back()) == ["default:while-down"]
        finally:
            if "client" in device:
                await side_a.run(device["client"].aclose())
            if "client" in caller:
                await side_b.run(caller["client"].aclose())
