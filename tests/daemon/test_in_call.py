"""In a call: privacy, unlock, the other side leaving, the server ending it, the link dropping."""

from __future__ import annotations

import pytest

from tests.daemon.conftest import Rig, into_call

CID = "default:door-door-1"


async def test_privacy_mutes_mic_and_camera(rig: Rig) -> None:
    await into_call(rig)
    await rig.press("privacy")
    assert rig.daemon.muted and rig.medias[0].muted
    assert rig.led() == "muted" and not rig.panel.camera_led.on
    await rig.advance(1.5)
    await rig.press("privacy")
    assert not rig.medias[0].muted
    assert rig.led() == "in_call" and rig.panel.camera_led.on


async def test_privacy_leds_say_muted_only_once_the_media_is_quiet(rig: Rig) -> None:
    """Muting: the media stops at once, but a frame already on its way still leaves, so the LEDs
    keep saying "live" until the media reports quiet. Unmuting: the LEDs say "live" before the
    media may send."""
    await into_call(rig)
    media = rig.medias[0]
    media.drained.clear()  # a frame is still on its way out
    await rig.press("privacy")
    assert media.muted and rig.daemon.muted
    assert rig.led() == "in_call" and rig.panel.camera_led.on
    media.drained.set()
    await rig.settle()
    assert rig.led() == "muted" and not rig.panel.camera_led.on

    seen: list[tuple[str, bool]] = []
    media.on_set_muted = lambda muted: seen.append((rig.led(), rig.panel.camera_led.on))
    await rig.advance(1.5)
    await rig.press("privacy")
    assert seen == [("in_call", True)] and not media.muted


async def test_privacy_toggled_back_before_quiet_never_shows_muted(rig: Rig) -> None:
    await into_call(rig)
    media = rig.medias[0]
    media.drained.clear()
    await rig.press("privacy")
    await rig.advance(1.5)
    await rig.press("privacy")  # unmuted again while the mute was still settling
    media.drained.set()
    await rig.settle()
    assert not rig.daemon.muted and rig.led() == "in_call" and rig.panel.camera_led.on
    assert "muted" not in rig.panel.values("status_led")


async def test_hanging_up_closes_the_gate_and_the_camera_led_goes_off_when_quiet(
    rig: Rig,
) -> None:
    await into_call(rig)
    media = rig.medias[0]
    media.drained.clear()
    await rig.advance(1.5)  # past the button's cooldown
    await rig.press("call")  # toggle: hang up
    assert rig.media_log[-2:] == ["gate closed", "quiet"] and rig.panel.camera_led.on
    media.drained.set()
    await rig.settle()
    assert not rig.panel.camera_led.on and rig.media_log[-1] == "stop"
    assert rig.state == "idle"


async def test_unlock_by_allowed_role_pulses_and_hangs_up(rig: Rig) -> None:
    rig.link.roles = {"alice": "admin"}
    await into_call(rig)
    rig.link.emit("custom", CID, user_id="alice", custom={"type": "unlock"})
    await rig.settle()
    assert rig.panel.relay is not None and rig.panel.relay.pin.state is True
    result = [c for c in rig.link.calls if c[0] == "event"][-1]
    assert result[2] == {
        "type": "unlock.result",
        "ok": True,
        "reason": "unlocked",
        "user_id": "alice",
    }
    await rig.advance(1.0)
    assert rig.panel.relay.pin.state is False
    assert rig.state == "in_call"
    await rig.advance(2.0)
    assert rig.state == "idle"
    assert ("leave", CID) in rig.link.calls
    assert "stop" in rig.media_log


async def test_unlock_by_role_not_allowed_is_refused(rig: Rig) -> None:
    rig.link.roles = {"alice": "call_member"}
    await into_call(rig)
    rig.link.emit("custom", CID, user_id="alice", custom={"type": "unlock"})
    await rig.settle()
    assert rig.panel.relay is not None and rig.panel.relay.pulses == []
    result = [c for c in rig.link.calls if c[0] == "event"][-1][2]
    assert result == {
        "type": "unlock.result",
        "ok": False,
        "reason": "role_not_allowed",
        "user_id": "alice",
    }
    await rig.advance(5)
    assert rig.state == "in_call"


async def test_unlock_from_someone_not_in_the_session_is_refused(rig: Rig) -> None:
    rig.link.roles = {"alice": "admin", "mallory": "admin"}
    await into_call(rig)
    rig.link.emit("custom", CID, user_id="mallory", custom={"type": "unlock"})
    await rig.settle()
    assert [c for c in rig.link.calls if c[0] == "event"][-1][2]["reason"] == "not_a_participant"


async def test_unlock_is_rate_limited(rig: Rig) -> None:
    rig.link.roles = {"alice": "admin"}
    cfg = rig.daemon.cfg
    rig.daemon.cfg = cfg.model_copy(
        update={"relay": cfg.relay.model_copy(update={"hangup_after_unlock_s": None})}  # type: ignore[union-attr]
    )
    await into_call(rig)
    rig.link.emit("custom", CID, user_id="alice", custom={"type": "unlock"})
    await rig.advance(2)
    rig.link.emit("custom", CID, user_id="alice", custom={"type": "unlock"})
    await rig.settle()
    reasons = [c[2]["reason"] for c in rig.link.calls if c[0] == "event"]
    assert reasons == ["unlocked", "rate_limited"]


async def test_other_side_leaving_ends_the_call(rig: Rig) -> None:
    await into_call(rig)
    rig.link.emit(
        "call.session_participant_left", CID, user_id="alice", participant_session="alice-s"
    )
    await rig.settle()
    assert rig.state == "idle"
    assert ("leave", CID) in rig.link.calls


async def test_call_ended_by_server_ends_locally(rig: Rig) -> None:
    await into_call(rig)
    rig.link.emit("call.ended", CID, reason="last_participant_left")
    await rig.settle()
    assert rig.state == "idle" and "stop" in rig.media_log
    assert rig.led() == "idle"


async def test_link_drop_keeps_the_call_and_shows_offline_only_when_idle(rig: Rig) -> None:
    await into_call(rig)
    rig.link.emit("link.offline")
    await rig.settle()
    assert rig.state == "in_call" and "stop" not in rig.media_log
    assert rig.led() == "in_call"
    assert rig.daemon.status()["server_link"] == "offline"
    await rig.advance(1.5)
    await rig.press("call")  # toggle → hang up
    assert rig.state == "idle" and rig.led() == "offline"
    rig.link.emit("link.online")
    assert rig.led() == "idle"


async def test_no_media_within_connect_timeout_hangs_up(rig: Rig) -> None:
    await rig.press("call")
    rig.link.emit("call.accepted", CID, user_id="alice")
    rig.link.emit("call.session_participant_joined", CID, user_id="alice", participant_session="a")
    await rig.settle()
    assert rig.state == "connecting"
    await rig.advance(20)
    assert rig.state == "idle" and ("leave", CID) in rig.link.calls


@pytest.mark.parametrize("reason", ["busy"])
async def test_ring_while_in_call_is_rejected_busy(rig: Rig, reason: str) -> None:
    await into_call(rig)
    rig.link.emit("call.ring", "default:other", user_id="bob")
    await rig.settle()
    assert ("reject", "default:other", reason) in rig.link.calls
    assert rig.state == "in_call"


async def test_status_is_one_json_object(rig: Rig) -> None:
    import json

    await into_call(rig)
    status = json.loads(json.dumps(rig.daemon.status()))
    assert status["call_state"] == "in_call" and status["server_link"] == "online"
    assert status["call_cid"] == CID and status["leds"]["status"] == "in_call"
    assert status["leds"]["camera_live"] is True and status["relay"]["pulses"] == 0
    assert status["muted"] is False and status["audio"] == {"frames_captured": 1}
