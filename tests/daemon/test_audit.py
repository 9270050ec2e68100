"""The audit trail (issue #5): every ring, answer, auto-answer, unlock and mute is one record on
``appliance.audit`` with the structured fields ``action``, ``call_cid`` and ``user``."""

from __future__ import annotations

import logging

import pytest

from tests.daemon.conftest import Rig, build, into_call, make_config
from tests.daemon.test_answer_mode import ANSWER, AUTO, ring
from tests.daemon.test_answer_mode import CID as BED_CID

DOOR_CID = "default:door-door-1"

Trail = list[tuple[str, str | None, str | None]]


def trail(caplog: pytest.LogCaptureFixture) -> Trail:
    return [
        (r.action, r.call_cid, r.user)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "appliance.audit"
    ]


async def test_ring_unlock_refusal_and_mute_are_audited(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.audit")
    rig.link.roles = {"alice": "admin", "mallory": "call_member"}
    await into_call(rig)
    await rig.press("privacy")
    await rig.advance(1.5)
    await rig.press("privacy")
    rig.link.emit("custom", DOOR_CID, user_id="alice", custom={"type": "unlock"})
    await rig.settle()
    assert trail(caplog) == [
        ("ring", DOOR_CID, "door-1"),
        ("accepted", DOOR_CID, "alice"),
        ("mute", DOOR_CID, "door-1"),
        ("unmute", DOOR_CID, "door-1"),
        ("unlock", DOOR_CID, "alice"),
    ]


async def test_a_further_participant_joining_the_call_is_audited(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.audit")
    await into_call(rig)  # alice answered: the two of them talk, nothing more to say
    assert [t for t in trail(caplog) if t[0] == "joined"] == []
    rig.link.emit(
        "call.session_participant_joined", DOOR_CID, user_id="bob", participant_session="bob-s"
    )
    await rig.settle()
    joined = [r for r in caplog.records if getattr(r, "action", None) == "joined"]
    assert [(r.call_cid, r.user) for r in joined] == [(DOOR_CID, "bob")]  # type: ignore[attr-defined]
    assert "now with alice, bob" in joined[0].getMessage()
    assert rig.state == "in_call"


async def test_refused_unlock_is_audited(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.audit")
    rig.link.roles = {"alice": "call_member"}
    await into_call(rig)
    rig.link.emit("custom", DOOR_CID, user_id="alice", custom={"type": "unlock"})
    await rig.settle()
    unlocks = [r for r in caplog.records if getattr(r, "action", None) == "unlock"]
    assert len(unlocks) == 1 and "refused: role_not_allowed" in unlocks[0].getMessage()


async def test_incoming_ring_answer_and_reject_are_audited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.audit")
    async for bed in build(make_config(ANSWER)):
        await ring(bed, "nurse")
        await bed.press("answer", hold=True)
        await bed.advance(2)
        await ring(bed, "nurse")
        await bed.press("answer")
        assert trail(caplog) == [
            ("ring", BED_CID, "nurse"),
            ("reject", BED_CID, "nurse"),
            ("ring", BED_CID, "nurse"),
            ("answer", BED_CID, "nurse"),
        ]


async def test_auto_answer_is_audited(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.audit")
    async for bed in build(make_config(ANSWER, **AUTO)):
        await ring(bed, "doctor")
        await bed.advance(3)
        assert bed.state == "connecting"
        assert trail(caplog) == [
            ("ring", BED_CID, "doctor"),
            ("auto-answer", BED_CID, "doctor"),
        ]
