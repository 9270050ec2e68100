"""Stream's own Python SDK (``getstream`` 7.0.0, pinned) drives our server as an external client.

It gets its own server token (the SDK signs it from the secret) and ``base_url`` pointing at a
real server on loopback; every assertion is on a value the SDK parsed (its parser fills missing
fields with ``None``, so "it parsed" alone proves nothing).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from getstream import AsyncStream
from getstream.exceptions import StreamApiException
from getstream.models import (
    CallRequest,
    CallSettingsRequest,
    LimitsSettingsRequest,
    MemberRequest,
    RingSettingsRequest,
    SortParamRequest,
    UserRequest,
)

from tests.support.server import ServerHandle, running_server

STARTS = datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)


@pytest_asyncio.fixture
async def sdk(tmp_path) -> AsyncIterator[tuple[AsyncStream, ServerHandle]]:
    async with running_server(tmp_path) as srv:
        client = AsyncStream(api_key=srv.api_key, api_secret=srv.api_secret, base_url=srv.base_url)
        try:
            yield client, srv
        finally:
            await client.aclose()


async def _users(client: AsyncStream) -> None:
    r = await client.upsert_users(
        UserRequest(id="alice", name="Alice", role="admin", custom={"flat": 1}),
        UserRequest(id="bob", name="Bob", teams=["blue"]),
        *(UserRequest(id=f"m{i}", name=f"M{i}", custom={"age": 20 + i}) for i in range(6)),
    )
    alice = r.data.users["alice"]
    assert (alice.name, alice.role, alice.custom) == ("Alice", "admin", {"flat": 1})
    assert r.data.users["bob"].teams == ["blue"]
    assert isinstance(alice.created_at, datetime) and alice.created_at.year >= 2024


async def test_calls_through_the_sdk(sdk: tuple[AsyncStream, ServerHandle]) -> None:
    client, _ = sdk
    await _users(client)
    call = client.video.call("default", "sdk-1")
    r = await call.get_or_create(
        data=CallRequest(
            created_by_id="alice",
            members=[
                MemberRequest(user_id="alice", role="host"),
                MemberRequest(user_id="bob", custom={"flat": 3}),
            ],
            custom={"site": "north"},
            settings_override=CallSettingsRequest(
                ring=RingSettingsRequest(
                    auto_cancel_timeout_ms=5000,
                    incoming_call_timeout_ms=4000,
                    missed_call_timeout_ms=2000,
                )
            ),
            starts_at=STARTS,
            team="blue",
        )
    )
    assert r.data.created is True
    c = r.data.call
    assert (c.cid, c.type, c.id, c.team) == ("default:sdk-1", "default", "sdk-1", "blue")
    assert c.created_by.id == "alice" and c.created_by.name == "Alice"
    assert c.custom == {"site": "north"}
    assert c.starts_at == STARTS
    assert c.settings.ring.auto_cancel_timeout_ms == 5000
    assert c.settings.ring.incoming_call_timeout_ms == 4000
    assert c.settings.video.enabled is True
    assert c.settings.recording.mode == "disabled"
    assert c.recording is False and c.egress.broadcasting is False
    assert isinstance(c.created_at, datetime) and c.created_at.tzinfo is not None
    members = {m.user_id: m for m in r.data.members}
    assert members["alice"].role == "host" and members["bob"].role == "call_member"
    assert members["bob"].custom == {"flat": 3} and members["bob"].user.name == "Bob"
    assert "join-call" in [str(x) for x in r.data.own_capabilities]

    # get; a second get-or-create does not create
    r2 = await call.get()
    assert r2.data.call.custom == {"site": "north"} and r2.data.call.starts_at == STARTS
    again = await call.get_or_create(data=CallRequest(created_by_id="bob", custom={"x": 1}))
    assert again.data.created is False and again.data.call.custom == {"site": "north"}

    # update
    r3 = await call.update(
        custom={"site": "south"},
        settings_override=CallSettingsRequest(limits=LimitsSettingsRequest(max_participants=4)),
    )
    assert r3.data.call.custom == {"site": "south"}
    assert r3.data.call.settings.limits.max_participants == 4
    assert r3.data.call.settings.ring.auto_cancel_timeout_ms == 5000  # earlier override kept
    assert r3.data.call.updated_at >= r3.data.call.created_at

    # update and remove members
    r4 = await call.update_call_members(
        update_members=[
            MemberRequest(user_id="bob", role="moderator", custom={"flat": 4}),
            *(MemberRequest(user_id=f"m{i}", custom={"age": 20 + i}) for i in range(6)),
        ]
    )
    got = {m.user_id: m for m in r4.data.members}
    assert got["bob"].role == "moderator" and got["bob"].custom == {"flat": 4}
    assert got["m5"].custom == {"age": 25}
    await call.update_call_members(remove_members=["alice"])
    after = {m.user_id for m in (await call.get(members_limit=100)).data.members}
    assert after == {"bob", *(f"m{i}" for i in range(6))}

    # custom event
    sent = await call.send_call_event(user_id="bob", custom={"type": "unlock"})
    assert sent.data.duration.endswith("ms")

    # delete
    deleted = await call.delete(hard=True)
    assert deleted.data.call.cid == "default:sdk-1"
    with pytest.raises(StreamApiException) as err:
        await call.get()
    assert err.value.status_code == 404


async def test_query_members_and_calls_through_the_sdk(
    sdk: tuple[AsyncStream, ServerHandle],
) -> None:
    client, _ = sdk
    await _users(client)
    call = client.video.call("default", "sdk-q")
    await call.get_or_create(
        data=CallRequest(
            created_by_id="alice",
            members=[MemberRequest(user_id=f"m{i}", custom={"age": 20 + i}) for i in range(6)],
        )
    )
    await client.video.call("default", "sdk-other").get_or_create(
        data=CallRequest(created_by_id="alice", members=[MemberRequest(user_id="bob")])
    )
    page1 = await client.video.query_call_members(
        id="sdk-q",
        type="default",
        filter_conditions={"custom.age": {"$gte": 22}},
        sort=[SortParamRequest(field="user_id", direction=-1)],
        limit=2,
    )
    assert [m.user_id for m in page1.data.members] == ["m5", "m4"]
    assert page1.data.members[0].custom == {"age": 25}
    assert page1.data.next
    page2 = await client.video.query_call_members(
        id="sdk-q",
        type="default",
        filter_conditions={"custom.age": {"$gte": 22}},
        sort=[SortParamRequest(field="user_id", direction=-1)],
        limit=2,
        next=page1.data.next,
    )
    assert [m.user_id for m in page2.data.members] == ["m3", "m2"]

    calls = await client.video.query_calls(filter_conditions={"members": {"$in": ["bob"]}})
    assert [c.call.cid for c in calls.data.calls] == ["default:sdk-other"]
    assert calls.data.calls[0].members[0].user_id == "bob"


async def test_ring_and_end_through_the_sdk(sdk: tuple[AsyncStream, ServerHandle]) -> None:
    client, _ = sdk
    await _users(client)
    call = client.video.call("default", "sdk-ring")
    r = await call.get_or_create(
        ring=True,
        data=CallRequest(
            created_by_id="alice",
            members=[MemberRequest(user_id="alice"), MemberRequest(user_id="bob")],
        ),
    )
    session = r.data.call.session
    assert session is not None and session.id == r.data.call.current_session_id
    assert session.ended_at is None and session.accepted_by == {}
    await call.end()
    ended = (await call.get()).data.call
    assert isinstance(ended.ended_at, datetime)
    again = await call.ring(members_ids=["bob"])
    assert again.data.members_ids == ["bob"]
    rung = (await call.get()).data.call
    assert rung.current_session_id and rung.current_session_id != session.id


async def test_call_types_through_the_sdk(sdk: tuple[AsyncStream, ServerHandle]) -> None:
    client, _ = sdk
    video = client.video
    created = await video.create_call_type(
        name="sdk_type",
        grants={"user": ["read-call"], "call_member": ["join-call", "read-call"]},
        settings=CallSettingsRequest(limits=LimitsSettingsRequest(max_duration_seconds=600)),
    )
    assert created.data.name == "sdk_type"
    assert created.data.grants["user"] == ["read-call"]
    assert created.data.settings.limits.max_duration_seconds == 600
    assert isinstance(created.data.created_at, datetime)
    got = await video.get_call_type("sdk_type")
    assert got.data.settings.ring.auto_cancel_timeout_ms == 30000
    updated = await video.update_call_type(
        "sdk_type", settings=CallSettingsRequest(limits=LimitsSettingsRequest(max_participants=2))
    )
    assert updated.data.settings.limits.max_participants == 2
    assert updated.data.settings.limits.max_duration_seconds == 600
    listed = await video.list_call_types()
    assert {"default", "audio_room", "livestream", "development", "sdk_type"} <= set(
        listed.data.call_types
    )
    assert listed.data.call_types["audio_room"].settings.video.enabled is False
    await video.delete_call_type("sdk_type")
    with pytest.raises(StreamApiException) as err:
        await video.get_call_type("sdk_type")
    assert err.value.status_code == 404
