"""call mode: CALL rings the members; every transition with an injected clock and fakes."""

from __future__ import annotations

from appliance.daemon.ports import MediaEvent
from tests.daemon.conftest import Rig

CID = "default:door-door-1"


async def test_call_press_rings_and_shows_calling(rig: Rig) -> None:
    assert rig.state == "idle" and rig.led() == "idle"
    await rig.press("call")
    assert rig.state == "calling"
    assert ("ring", "door-door-1") in rig.link.calls
    assert rig.led() == "calling" and rig.sounds.log == ["ringback"]
    assert rig.daemon.cid == CID


async def test_second_press_within_cooldown_places_no_second_call(rig: Rig) -> None:
    await rig.press("call")
    await rig.press("call")
    assert rig.link.verbs().count("ring") == 1
    assert rig.state == "calling"


async def test_second_press_after_cooldown_cancels(rig: Rig) -> None:
    await rig.press("call")
    await rig.advance(1.5)
    await rig.press("call")
    assert ("reject", CID, "cancel") in rig.link.calls
    assert rig.states() == ["calling", "ending", "idle"]
    assert rig.link.verbs().count("ring") == 1


async def test_accept_joins_then_media_connects(rig: Rig) -> None:
    rig.link.participants = {"alice-s": "alice"}
    await rig.press("call")
    rig.link.emit("call.accepted", CID, user_id="alice")
    await rig.settle()
    assert rig.state == "connecting"
    assert "join" not in rig.link.verbs()  # the accepter joins first
    rig.link.emit(
        "call.session_participant_joined", CID, user_id="alice", participant_session="alice-s"
    )
    await rig.settle()
    assert ("join", CID, False) in rig.link.calls
    assert rig.media_log == ["muted=False", "start", "gate"]
    assert rig.panel.camera_led.on
    rig.medias[0].on_event(MediaEvent("peer_connected"))
    assert rig.state == "in_call" and rig.led() == "in_call"
    assert rig.panel.status_led.pin.state is True
    assert rig.states() == ["calling", "connecting", "in_call"]


async def test_all_rejected_shows_missed_then_idle(rig: Rig) -> None:
    await rig.press("call")
    rig.link.emit("call.ended", CID, reason="rejected")
    await rig.settle()
    assert rig.state == "idle" and rig.led() == "missed"
    await rig.advance(10)
    assert rig.led() == "idle"


async def test_local_ring_timeout_cancels(rig: Rig) -> None:
    await rig.press("call")
    await rig.advance(30)
    assert ("reject", CID, "cancel") in rig.link.calls
    assert rig.state == "idle" and rig.led() == "missed"


async def test_hold_hangs_up_while_calling(rig: Rig) -> None:
    await rig.press("call")
    await rig.advance(1.5)
    await rig.press("call", hold=True)
    assert rig.state == "idle"
    assert ("reject", CID, "cancel") in rig.link.calls


async def test_accepter_never_seen_joining_we_join_anyway(rig: Rig) -> None:
    await rig.press("call")
    rig.link.emit("call.accepted", CID, user_id="alice")
    await rig.advance(2.5)
    assert "join" not in rig.link.verbs()
    await rig.advance(0.5)
    assert ("join", CID, False) in rig.link.calls


async def test_call_action_while_calling_is_ignored_after_cooldown_too() -> None:
    from tests.daemon.conftest import BASE, build, make_config

    text = BASE.replace("press: toggle, hold: hangup", "press: call, hold: hangup")
    async for rig in build(make_config(text)):
        await rig.press("call")
        await rig.advance(1.5)
        await rig.press("call")
        assert rig.link.verbs().count("ring") == 1 and rig.state == "calling"


async def test_stopping_while_calling_cancels_the_ring(rig: Rig) -> None:
    await rig.press("call")
    await rig.daemon.stop()
    assert ("reject", CID, "cancel") in rig.link.calls
    assert rig.state == "idle" and not rig.panel.camera_led.on
