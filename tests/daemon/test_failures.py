"""Failures: the server refusing a ring, media failing to start; events from the real client."""

from __future__ import annotations

from typing import Any

from appliance.client import CONNECTION_LOST, CONNECTION_OK, Event
from appliance.daemon.link import to_link_event
from appliance.errors import PermissionDenied
from tests.daemon.conftest import Rig

CID = "default:door-door-1"


async def test_refused_ring_shows_error_then_idle(rig: Rig) -> None:
    async def refuse(*args: Any) -> str:
        raise PermissionDenied("may not create", cid=CID)

    original = rig.link.ring
    rig.link.ring = refuse  # type: ignore[method-assign]
    await rig.press("call")
    assert rig.state == "idle" and rig.led() == "error"
    assert rig.daemon.status()["last_error"].startswith("PermissionDenied")
    await rig.advance(5)
    assert rig.led() == "idle" and rig.daemon.last_error is None
    rig.link.ring = original  # type: ignore[method-assign]
    await rig.advance(1.5)
    await rig.press("call")  # the next press works again
    assert rig.link.verbs().count("ring") == 1 and rig.state == "calling"


async def test_failed_join_after_accept_tears_down(rig: Rig) -> None:
    rig.link.fail_join = 1
    await rig.press("call")
    rig.link.emit("call.accepted", CID, user_id="alice")
    rig.link.emit("call.session_participant_joined", CID, user_id="alice", participant_session="a")
    await rig.settle()
    assert rig.state == "idle" and rig.led() == "error"
    assert not rig.panel.camera_led.on


def test_client_events_become_link_events() -> None:
    assert to_link_event(Event(type=CONNECTION_OK)).type == "link.online"
    assert to_link_event(Event(type=CONNECTION_LOST)).type == "link.offline"
    ring = to_link_event(
        Event.parse(
            {
                "type": "call.ring",
                "call_cid": "default:room-7",
                "user": {"id": "nurse"},
                "call": {"type": "default", "id": "room-7", "cid": "default:room-7"},
            }
        )
    )
    assert (ring.type, ring.call_cid, ring.user_id) == ("call.ring", "default:room-7", "nurse")
    left = to_link_event(
        Event.parse(
            {
                "type": "call.session_participant_left",
                "call_cid": "default:room-7",
                "participant": {"user_session_id": "s-1", "user": {"id": "nurse"}},
            }
        )
    )
    assert (left.user_id, left.participant_session) == ("nurse", "s-1")
    custom = to_link_event(
        Event.parse(
            {
                "type": "custom",
                "call_cid": "default:room-7",
                "user": {"id": "alice"},
                "custom": {"type": "unlock"},
            }
        )
    )
    assert custom.custom == {"type": "unlock"} and custom.user_id == "alice"
