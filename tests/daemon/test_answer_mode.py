"""answer mode: rings come from the server; ANSWER accepts, hold rejects; auto-answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from appliance.daemon.ports import MediaEvent
from tests.daemon.conftest import Rig, build, make_config

CID = "default:room-7"

ANSWER = """
device: {id: bed-7, name: Room 7}
server: embedded
call: {type: default, id: "room-7"}
mode: answer
buttons:
  - {name: answer, pin: 17, press: answer, hold: reject, cooldown: 1.0}
  - {name: privacy, pin: 18, press: privacy}
leds:
  status: {pin: 27}
  camera_live: {pin: 22}
timings: {ring_timeout_s: 30, missed_s: 10}
"""


@pytest.fixture
async def bed(request: Any) -> AsyncIterator[Rig]:
    extra = getattr(request, "param", {})
    async for r in build(make_config(ANSWER, **extra)):
        yield r


async def ring(rig: Rig, caller: str = "nurse") -> None:
    rig.link.emit("call.ring", CID, user_id=caller)
    await rig.settle()


async def test_ring_then_answer(bed: Rig) -> None:
    await ring(bed)
    assert bed.state == "ringing" and bed.led() == "ringing" and bed.sounds.log == ["chime"]
    bed.link.participants = {}
    await bed.press("answer")
    assert bed.link.verbs()[:2] == ["accept", "join"]
    assert bed.state == "connecting" and bed.sounds.playing is None
    bed.medias[0].on_event(MediaEvent("peer_connected"))
    assert bed.state == "in_call"
    assert bed.states() == ["ringing", "connecting", "in_call"]


async def test_hold_rejects(bed: Rig) -> None:
    await ring(bed)
    await bed.press("answer", hold=True)
    assert ("reject", CID, "decline") in bed.link.calls
    assert bed.state == "idle" and bed.led() == "idle"


async def test_missed_after_server_timeout(bed: Rig) -> None:
    await ring(bed)
    bed.link.emit("call.missed", CID, user_id="bed-7")
    await bed.settle()
    assert bed.state == "idle" and bed.led() == "missed"


async def test_missed_after_local_timeout(bed: Rig) -> None:
    await ring(bed)
    await bed.advance(30)
    assert bed.state == "idle" and bed.led() == "missed"


async def test_caller_cancel_stops_ringing(bed: Rig) -> None:
    await ring(bed)
    bed.link.emit("call.rejected", CID, user_id="nurse", reason="cancel")
    await bed.settle()
    assert bed.state == "idle" and bed.sounds.playing is None


async def test_answered_elsewhere_stops_ringing(bed: Rig) -> None:
    await ring(bed)
    bed.link.emit("call.accepted", CID, user_id="other-bed")
    await bed.settle()
    assert bed.state == "idle" and bed.led() == "idle"


async def test_own_ring_echo_is_ignored(bed: Rig) -> None:
    bed.link.emit("call.ring", CID, user_id="bed-7")
    await bed.settle()
    assert bed.state == "idle"


AUTO = {"auto_answer": {"users": ["doctor"], "roles": ["admin"], "delay_s": 3}}


@pytest.mark.parametrize("bed", [AUTO], indirect=True)
async def test_auto_answer_chimes_and_lights_camera_before_gate(bed: Rig) -> None:
    await ring(bed, "doctor")
    await bed.advance(2)
    assert bed.state == "ringing" and not bed.panel.camera_led.on
    await bed.advance(1)
    assert bed.sounds.log == ["chime", "pre_announce"]
    assert bed.state == "connecting"
    assert bed.link.verbs()[:2] == ["accept", "join"]
    led_on = [r.at for r in bed.panel.history if r.what == "camera_live" and r.value]
    assert led_on, "camera-live LED never lit"
    assert bed.media_log.index("gate") > bed.media_log.index("start")
    # the LED was on when media started: gate opens after it
    assert bed.panel.camera_led.on


@pytest.mark.parametrize("bed", [AUTO], indirect=True)
async def test_privacy_during_the_pre_announce_turns_the_camera_led_off_for_good(
    bed: Rig,
) -> None:
    bed.sounds.finished.clear()  # the pre-announce chime is still playing
    await ring(bed, "doctor")
    await bed.advance(3)
    assert bed.panel.camera_led.on and bed.state == "ringing"
    await bed.press("privacy")
    assert not bed.panel.camera_led.on
    bed.sounds.finished.set()
    await bed.settle()
    assert bed.state == "connecting" and bed.medias[0].muted
    assert bed.media_log[:3] == ["muted=True", "start", "gate"]
    assert True not in bed.panel.values("camera_live")[1:]  # never lit again


@pytest.mark.parametrize("bed", [AUTO], indirect=True)
async def test_auto_answer_by_member_role(bed: Rig) -> None:
    bed.link.roles = {"relative": "admin"}
    await ring(bed, "relative")
    await bed.advance(3)
    assert bed.state == "connecting"


@pytest.mark.parametrize("bed", [AUTO], indirect=True)
async def test_no_auto_answer_for_others(bed: Rig) -> None:
    bed.link.roles = {"stranger": "call_member"}
    await ring(bed, "stranger")
    await bed.advance(5)
    assert bed.state == "ringing" and "accept" not in bed.link.verbs()


APPOINTMENT = {"call": {"type": "default", "id": "room-7", "starts_at": "2023-11-14T22:15:00Z"}}


@pytest.mark.parametrize("bed", [APPOINTMENT], indirect=True)
async def test_configured_appointment_is_joined_at_starts_at(bed: Rig) -> None:
    # ManualClock starts at 2023-11-14T22:13:20Z: 100 s to go
    await bed.advance(99)
    assert "join" not in bed.link.verbs()
    await bed.advance(1)
    assert ("join", CID, True) in bed.link.calls
    assert bed.state == "in_call"  # waits in the call for the other side
    await bed.advance(60)
    assert bed.state == "in_call"
    bed.link.emit("call.session_participant_joined", CID, user_id="dr", participant_session="d")
    bed.link.emit("call.session_participant_left", CID, user_id="dr", participant_session="d")
    await bed.settle()
    assert bed.state == "idle"
    await bed.advance(3600)
    assert bed.link.verbs().count("join") == 1  # once


async def test_appointment_found_on_the_server_is_joined(bed: Rig) -> None:
    bed.link.appointments = [("default:visit-42", bed.clock.time() + 90)]
    await bed.advance(60)  # the next poll finds it
    assert "join" not in bed.link.verbs()
    await bed.advance(30)
    assert ("join", "default:visit-42", True) in bed.link.calls
    await bed.advance(120)
    assert bed.link.verbs().count("join") == 1
