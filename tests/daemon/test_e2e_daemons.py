"""Issue #5 end to end: two real daemons (intercom + bedside) and the real server on loopback.

Each daemon is the full assembly of ``appliance run`` (``appliance.daemon.service.running``): real
client, real media engine (test camera, libx264, aiortc), ALSA through a private config (the
intercom's microphone plays a tone from a raw file, the bedside's speaker writes to a file),
gpiozero mock pins driven like a finger would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.client import Client
from appliance.daemon.config import DeviceConfig, load_config
from appliance.daemon.service import Running, running
from appliance.errors import NotFound
from tests.support.alsa import AlsaSandbox
from tests.support.poll import wait_for
from tests.support.server import ServerHandle, running_server
from tests.support.tone import dominant_frequency, read_pcm, write_tone_file

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TONE_HZ = 523.0
USERS = [
    {"id": "entrance", "name": "Entrance"},
    {"id": "bed", "name": "Bed 7"},
    {"id": "alice", "name": "Alice"},
]


def device_config(
    tmp: Path,
    srv: ServerHandle,
    name: str,
    data: dict[str, Any],
    audio: dict[str, str],
    display: bool = False,
) -> DeviceConfig:
    folder = tmp / name
    folder.mkdir()
    data = {
        **data,
        "server": {"url": srv.base_url, "api_key": srv.api_key, "token": srv.user_token(name)},
        "pin_factory": "mock",
        "state_dir": str(folder / "state"),
        "media": {
            "camera": {"source": "test", "width": 320, "height": 240, "fps": 15, "bitrate": 300000},
            "display": display,
            "audio": audio,
        },
        "sounds": {"chime": "none", "ringback": "none", "pre_announce": "none"},
    }
    path = folder / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


INTERCOM: dict[str, Any] = {
    "device": {"id": "entrance", "name": "Entrance"},
    "call": {"type": "default", "id": "door-{device}", "members": ["bed:call_member"]},
    "mode": "call",
    "buttons": [{"name": "call", "pin": 17, "press": "toggle", "hold": "hangup", "cooldown": 0.5}],
    "leds": {"status": {"pin": 27}, "camera_live": {"pin": 22}},
    "relay": {
        "pin": 23,
        "pulse_ms": 300,
        "unlock_roles": ["admin"],
        "min_interval_s": 1,
        "hangup_after_unlock_s": 1,
    },
}

BEDSIDE: dict[str, Any] = {
    "device": {"id": "bed", "name": "Bed 7"},
    "call": {"type": "default", "id": "room-{device}"},
    "mode": "answer",
    "buttons": [
        {"name": "answer", "pin": 17, "press": "toggle", "hold": "reject", "cooldown": 0.5}
    ],
    "leds": {"status": {"pin": 27}, "camera_live": {"pin": 22}},
}


@contextlib.asynccontextmanager
async def two_daemons(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    bedside: dict[str, Any],
    *,
    door_display: bool = False,
    bed_display: bool = True,
) -> AsyncIterator[tuple[ServerHandle, Running, Running, Path]]:
    alsa = AlsaSandbox.activate(tmp_path / "alsa", monkeypatch)
    alsa.capture_from("door_mic", write_tone_file(tmp_path / "door.raw", TONE_HZ, 300.0))
    alsa.playback_to("door_speaker", tmp_path / "door_out.raw")
    alsa.null("bed_mic")
    bed_out = tmp_path / "bed_out.raw"
    alsa.playback_to("bed_speaker", bed_out)
    async with running_server(tmp_path / "server", users=USERS) as srv:
        door_cfg = device_config(
            tmp_path,
            srv,
            "entrance",
            INTERCOM,
            {"capture_device": "door_mic", "playback_device": "door_speaker"},
            display=door_display,
        )
        # the bedside has a screen: it receives the door's video (the door has none)
        bed_cfg = device_config(
            tmp_path,
            srv,
            "bed",
            bedside,
            {"capture_device": "bed_mic", "playback_device": "bed_speaker"},
            display=bed_display,
        )
        async with running(door_cfg) as door, running(bed_cfg) as bed:
            await asyncio.wait_for(door.daemon.wait_online(), 20)
            await asyncio.wait_for(bed.daemon.wait_online(), 20)
            yield srv, door, bed, bed_out


async def calls_exist(srv: ServerHandle, wanted: dict[str, set[str]], seconds: float = 30) -> None:
    """Wait until each call exists with (at least) these members."""
    deadline = time.monotonic() + seconds
    async with Client(srv.base_url, srv.api_key, srv.server_token()) as admin:
        for cid, members in wanted.items():
            call = admin.call(*cid.split(":", 1))
            while True:
                try:
                    have = {m.user_id for m in (await call.get()).members}
                except NotFound:
                    have = set()
                if members <= have:
                    break
                assert time.monotonic() < deadline, f"{cid} has members {have}, not {members}"
                await asyncio.sleep(0.1)


async def test_call_answer_media_unlock_hangup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with two_daemons(tmp_path, monkeypatch, BEDSIDE) as (srv, door, bed, bed_out):
        cid = "default:door-entrance"
        # Once online each daemon get-or-creates its configured call without ringing, and the
        # door publishes its unlock_roles in custom.device (the console hides Unlock from others).
        await calls_exist(srv, {cid: {"entrance", "bed"}, "default:room-bed": {"bed"}})
        async with Client(srv.base_url, srv.api_key, srv.server_token()) as admin:
            members = (await admin.call("default", "door-entrance").get()).members
        device = next(m.user for m in members if m.user_id == "entrance")
        assert device is not None and device.custom["device"]["unlock_roles"] == ["admin"]
        assert door.daemon.call_state.value == "idle" == bed.daemon.call_state.value
        await door.daemon.panel.press("call")  # type: ignore[attr-defined]
        await wait_for("bedside ringing", lambda: bed.daemon.call_state.value == "ringing")
        assert bed.daemon.cid == cid and bed.daemon.panel.snapshot()["leds"]["status"] == "ringing"
        assert door.daemon.call_state.value == "calling"

        await bed.daemon.panel.press("answer")  # type: ignore[attr-defined]
        await wait_for(
            "both in call",
            lambda: door.daemon.call_state.value == "in_call" == bed.daemon.call_state.value,
        )
        await wait_for("door video leaving", lambda: door.daemon.first_packet_at is not None)
        assert door.daemon.panel.snapshot()["leds"] == {
            "status": "in_call",
            "status_pattern": "on",
            "camera_live": True,
        }

        def heard() -> int:
            stats = bed.daemon.status()["audio"] or {}
            return int(stats.get("playback", {}).get("frames_received", 0))

        await wait_for("door audio at the bedside", lambda: heard() > 48000)

        # An unlock from a member whose role is not allowed is refused...
        results: list[dict[str, Any]] = []
        async with Client(srv.base_url, srv.api_key, srv.user_token("bed")) as remote:
            remote.on("custom", lambda e: results.append(e.custom or {}))
            await remote.connect()
            call = remote.call("default", "door-entrance")
            await call.send_event({"type": "unlock"})
            await wait_for(
                "refusal", lambda: any(r.get("type") == "unlock.result" for r in results)
            )
            refusal = next(r for r in results if r.get("type") == "unlock.result")
            assert refusal["reason"] == "role_not_allowed"
            relay = door.daemon.panel.relay  # type: ignore[attr-defined]
            assert relay.pulses == [] and door.daemon.call_state.value == "in_call"

            # ...and once the member is made an admin, it opens the door and the call hangs up.
            async with srv.client() as admin:
                r = await admin.post(
                    "/api/v2/video/call/default/door-entrance/members",
                    json={"update_members": [{"user_id": "bed", "role": "admin"}]},
                )
                assert r.status_code == 201 or r.status_code == 200, r.text
            results.clear()
            await call.send_event({"type": "unlock"})
            await wait_for("relay pulse", lambda: len(relay.pulses) == 1)
            assert relay.pin.state is True
            await wait_for("unlock result", lambda: any(r.get("ok") for r in results))
            await wait_for("relay released", lambda: relay.pin.state is False, 5)
            assert relay.pulses[0].by == "bed"
        await wait_for("door hung up", lambda: door.daemon.call_state.value == "idle", 10)
        await wait_for("bedside idle", lambda: bed.daemon.call_state.value == "idle", 30)
        assert bed.daemon.panel.snapshot()["leds"]["camera_live"] is False
    samples = read_pcm(bed_out)
    assert dominant_frequency(samples[-48000 * 2 :]) == pytest.approx(TONE_HZ, abs=5)


async def test_auto_answer_lights_camera_live_before_first_packet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the door has the screen this time, so the bedside's video leaves the room
    bedside = {**BEDSIDE, "auto_answer": {"users": ["entrance"], "delay_s": 0.5}}
    async with two_daemons(
        tmp_path, monkeypatch, bedside, door_display=True, bed_display=False
    ) as (_srv, door, bed, _out):
        await door.daemon.panel.press("call")  # type: ignore[attr-defined]
        await wait_for("auto-answered call", lambda: bed.daemon.call_state.value == "in_call")
        await wait_for("first packet", lambda: bed.daemon.first_packet_at is not None)
        history = bed.daemon.panel.history  # type: ignore[attr-defined]
        lit = [r.at for r in history if r.what == "camera_live" and r.value]
        assert lit and lit[0] <= bed.daemon.first_packet_at  # type: ignore[operator]
        assert [t[2] for t in bed.daemon.transitions][:3] == ["ringing", "connecting", "in_call"]
