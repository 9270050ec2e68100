"""The daemon's ``GET /metrics``: read from the daemon at scrape time (call state, server link,
audio, the call's peers), served on loopback, a token needed anywhere else."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from appliance.daemon.config import MetricsConfig
from appliance.daemon.metrics import MetricsEndpoint, registry_for
from appliance.daemon.service import Running
from tests.daemon.conftest import Rig, into_call
from tests.daemon.test_e2e_daemons import BEDSIDE, INTERCOM, two_daemons, wait_for
from tests.support.metrics import samples as parse
from tests.support.metrics import value

TOKEN = "daemon-metrics-token-0123"


async def scrape(port: int, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as http:
        return await http.get(f"http://127.0.0.1:{port}/metrics", headers=headers)


async def test_call_state_is_read_at_scrape_time(rig: Rig) -> None:
    endpoint = MetricsEndpoint(MetricsConfig(listen="127.0.0.1:0"), registry_for(rig.daemon))
    await endpoint.start()
    try:
        r = await scrape(endpoint.port)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        idle = parse(r.text)
        assert value(idle, "appliance_daemon_call_state", state="idle") == 1
        assert value(idle, "appliance_daemon_call_state", state="in_call") == 0
        assert value(idle, "process_cpu_seconds_total") > 0
        await into_call(rig)
        busy = parse((await scrape(endpoint.port)).text)
        assert value(busy, "appliance_daemon_call_state", state="in_call") == 1
        assert value(busy, "appliance_daemon_call_state", state="idle") == 0
    finally:
        await endpoint.close()


async def test_only_get_metrics_and_the_token_when_configured(rig: Rig) -> None:
    cfg = MetricsConfig(listen="127.0.0.1:0", token=TOKEN)
    endpoint = MetricsEndpoint(cfg, registry_for(rig.daemon))
    await endpoint.start()
    try:
        assert (await scrape(endpoint.port)).status_code == 401
        assert (await scrape(endpoint.port, Authorization=f"Bearer {TOKEN}x")).status_code == 401
        ok = await scrape(endpoint.port, Authorization=f"Bearer {TOKEN}")
        assert ok.status_code == 200 and "appliance_daemon_server_link" in ok.text
        async with httpx.AsyncClient() as http:
            other = await http.get(f"http://127.0.0.1:{endpoint.port}/status")
            assert other.status_code == 404
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"GET /metrics HTTP/1.1\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        await endpoint.close()


def test_a_non_loopback_listen_address_needs_a_token() -> None:
    with pytest.raises(ValidationError, match=r"metrics\.token"):
        MetricsConfig(listen="0.0.0.0:9310")
    assert MetricsConfig(listen="0.0.0.0:9310", token=TOKEN).port == 9310
    assert MetricsConfig(listen="[::1]:9310").host == "::1"
    with pytest.raises(ValidationError, match="host:port"):
        MetricsConfig(listen="9310")


@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_a_real_call_shows_in_the_daemon_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(INTERCOM, "metrics", {"listen": "127.0.0.1:0"})
    bedside: dict[str, Any] = {**BEDSIDE, "metrics": {"listen": "127.0.0.1:0"}}
    async with two_daemons(tmp_path, monkeypatch, bedside) as (_srv, door, bed, _out):
        door_port = _port(door)
        before = parse((await scrape(door_port)).text)
        assert value(before, "appliance_daemon_server_link", state="online") == 1
        assert value(before, "appliance_daemon_call_state", state="idle") == 1
        assert value(before, "appliance_daemon_video_frames_sent_total") == 0
        await door.daemon.panel.press("call")  # type: ignore[attr-defined]
        await wait_for("bedside ringing", lambda: bed.daemon.call_state.value == "ringing")
        ringing = parse((await scrape(_port(bed))).text)
        assert value(ringing, "appliance_daemon_call_state", state="ringing") == 1
        await bed.daemon.panel.press("answer")  # type: ignore[attr-defined]
        await wait_for("door in call", lambda: door.daemon.call_state.value == "in_call")
        await wait_for("door video leaving", lambda: door.daemon.first_packet_at is not None)
        frames: list[float] = []

        async def sent() -> float:
            now = parse((await scrape(door_port)).text)
            frames.append(value(now, "appliance_daemon_video_frames_sent_total"))
            return frames[-1]

        for _ in range(200):
            if await sent() >= 10:
                break
            await asyncio.sleep(0.05)
        assert frames[-1] >= 10, frames
        during = parse((await scrape(door_port)).text)
        assert value(during, "appliance_daemon_call_state", state="in_call") == 1
        assert value(during, "appliance_daemon_peers", state="connected") == 1
        assert value(during, "appliance_daemon_ice_restarts_total") == 0
        status = door.daemon.status()["audio"] or {}
        assert value(during, "appliance_daemon_audio_capture_overruns_total") == status.get(
            "capture", {}
        ).get("overruns", 0)
        assert ("appliance_daemon_audio_playback_underruns_total", frozenset()) in during


def _port(run: Running) -> int:
    endpoint = run.extras["metrics"]
    assert isinstance(endpoint, MetricsEndpoint)
    return endpoint.port
