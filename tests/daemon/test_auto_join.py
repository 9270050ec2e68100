"""auto_join: join at start (or at starts_at), stay joined, rejoin forever with backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.daemon.conftest import Rig, build, make_config

CID = "default:site-field-1"

FIELD = """
device: {id: field-1}
server: embedded
call: {type: default, id: "site-{device}"}
mode: auto_join
buttons: [{name: join, pin: 17, press: join}]
leds: {status: {pin: 27}}
timings: {rejoin_min_s: 1, rejoin_max_s: 8}
"""


@pytest.fixture
async def field(request: Any) -> AsyncIterator[Rig]:
    extra = getattr(request, "param", {})
    async for r in build(make_config(FIELD, **extra)):
        yield r


def joins(rig: Rig) -> int:
    return rig.link.verbs().count("join")


async def test_joins_at_start_and_stays(field: Rig) -> None:
    assert ("join", CID, True) in field.link.calls
    assert field.state == "in_call" and field.led() == "in_call"
    field.link.emit("call.session_participant_left", CID, user_id="x", participant_session="x-1")
    await field.advance(60)
    assert field.state == "in_call" and joins(field) == 1


async def test_rejoins_after_the_call_ends_with_backoff(field: Rig) -> None:
    field.link.emit("call.ended", CID, reason="last_participant_left")
    await field.settle()
    assert field.state == "idle"
    await field.advance(0.9)
    assert joins(field) == 1
    await field.advance(0.2)
    assert joins(field) == 2 and field.state == "in_call"
    field.link.emit("call.ended", CID)
    await field.advance(1.1)
    assert joins(field) == 2  # backoff doubled to 2 s
    await field.advance(1.0)
    assert joins(field) == 3


async def test_failed_joins_retry_forever_with_capped_backoff(field: Rig) -> None:
    field.link.fail_join = 10
    field.link.emit("call.ended", CID)
    seconds = 0
    while joins(field) < 12 and seconds < 200:
        await field.advance(1)
        seconds += 1
    # 1 + 2 + 4 + 8 + 8 * 7 s of backoff: the delay doubles and stays at rejoin_max_s
    assert seconds == 71
    assert field.state == "in_call"


async def test_dropped_while_offline_rejoins_after_reconnect(field: Rig) -> None:
    field.link.emit("link.offline")
    await field.settle()
    assert field.state == "in_call"
    field.link.sessions_alive = set()  # the server forgot us
    field.link.emit("link.online")
    await field.advance(1.1)
    assert joins(field) == 2 and field.state == "in_call"


async def test_still_joined_after_reconnect_keeps_the_call(field: Rig) -> None:
    me = field.daemon.joined.session_id  # type: ignore[union-attr]
    field.link.sessions_alive = {me}
    field.link.emit("link.offline")
    field.link.emit("link.online")
    await field.advance(5)
    assert joins(field) == 1 and "stop" not in field.media_log


@pytest.mark.parametrize(
    "field",
    [{"call": {"type": "default", "id": "site-{device}", "starts_at": "2023-11-14T23:00:00Z"}}],
    indirect=True,
)
async def test_waits_for_starts_at(field: Rig) -> None:
    # ManualClock starts at 1_700_000_000 = 2023-11-14T22:13:20Z
    assert joins(field) == 0
    await field.advance(2799)
    assert joins(field) == 0
    await field.advance(2)
    assert joins(field) == 1
