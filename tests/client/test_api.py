"""Every REST method of Client and Call against a real server on loopback."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from appliance.client import MemberRequest, User
from tests.client.conftest import MakeClient, next_event

# The device is an admin member of its own calls (update settings, remove members, end).
DOOR_ADMIN = MemberRequest(user_id="door", role="admin")


async def test_create_with_members_custom_settings_starts_at_and_team(
    make_client: MakeClient,
) -> None:
    client = make_client("door")
    starts = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    call = client.call("default", "door-1")
    response = await call.create(
        member_ids=["alice"],
        members=[MemberRequest(user_id="bob", role="admin", custom={"color": "red"})],
        custom={"site": "north gate"},
        settings={"ring": {"auto_cancel_timeout_ms": 20000, "incoming_call_timeout_ms": 15000}},
        starts_at=starts,
        team=None,
    )
    assert response.created is True
    info = response.call
    assert (info.type, info.id, info.cid) == ("default", "door-1", "default:door-1")
    assert info.custom == {"site": "north gate"}
    assert info.starts_at == starts
    assert info.created_by is not None and info.created_by.id == "door"
    assert info.settings.ring is not None
    assert info.settings.ring.auto_cancel_timeout_ms == 20000
    assert info.settings.ring.incoming_call_timeout_ms == 15000
    roles = {m.user_id: m.role for m in response.members}
    assert roles["bob"] == "admin"
    assert roles["alice"] == "call_member"
    bob = next(m for m in response.members if m.user_id == "bob")
    assert bob.custom == {"color": "red"}
    assert bob.user is not None and bob.user.name == "Bob"
    assert "join-call" in response.own_capabilities
    assert isinstance(info.created_at, datetime) and info.created_at.tzinfo is not None

    again = await client.call("default", "door-1").create(custom={"ignored": True})
    assert again.created is False
    assert again.call.custom == {"site": "north gate"}


async def test_empty_id_becomes_a_uuid(make_client: MakeClient) -> None:
    call = make_client("door").call("default")
    assert uuid.UUID(call.id).version == 4
    response = await call.create(member_ids=["alice"])
    assert response.call.id == call.id


async def test_team_and_get(make_client: MakeClient) -> None:
    server = make_client()
    call = server.call("default", "ward-a-bed-3")
    await call.create(member_ids=["nurse"], team="ward-a", created_by_id="nurse")
    fetched = await make_client("nurse").call("default", "ward-a-bed-3").get()
    assert fetched.call.team == "ward-a"
    assert [m.user_id for m in fetched.members] == ["nurse"]


async def test_update_custom_settings_and_starts_at(make_client: MakeClient) -> None:
    call = make_client("door").call("default", "door-1")
    await call.create(member_ids=["alice"], members=[DOOR_ADMIN], custom={"a": 1})
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    updated = await call.update(
        custom={"a": 2, "b": "x"}, settings={"limits": {"max_participants": 3}}, starts_at=later
    )
    assert updated.call.custom == {"a": 2, "b": "x"}
    assert updated.call.settings.limits is not None
    assert updated.call.settings.limits.max_participants == 3
    assert updated.call.starts_at == later
    assert (await call.get()).call.custom == {"a": 2, "b": "x"}


async def test_update_and_remove_members(make_client: MakeClient) -> None:
    call = make_client("door").call("default", "door-1")
    await call.create(member_ids=["alice", "bob"], members=[DOOR_ADMIN])
    changed = await call.update_members(
        [MemberRequest(user_id="alice", role="admin", custom={"k": 1}), {"user_id": "carol"}]
    )
    assert {m.user_id: m.role for m in changed} == {"alice": "admin", "carol": "call_member"}
    await call.remove_members(["bob"])
    members = {m.user_id: m for m in (await call.get()).members}
    assert set(members) == {"door", "alice", "carol"}
    assert members["alice"].custom == {"k": 1}


async def test_query_members_filter_sort_limit(make_client: MakeClient) -> None:
    call = make_client("door").call("default", "door-1")
    await call.create(
        members=[
            {"user_id": "alice", "role": "admin", "custom": {"color": "red"}},
            {"user_id": "bob", "role": "admin", "custom": {"color": "blue"}},
            {"user_id": "carol", "custom": {"color": "red"}},
        ]
    )
    admins = await call.query_members({"role": "admin"}, sort=[("user_id", -1)], limit=5)
    assert [m.user_id for m in admins.members] == ["bob", "alice"]
    red = await call.query_members({"custom.color": {"$eq": "red"}}, sort=("user_id", 1))
    assert [m.user_id for m in red.members] == ["alice", "carol"]
    first = await call.query_members(sort=[("user_id", 1)], limit=2)
    assert [m.user_id for m in first.members] == ["alice", "bob"]
    assert first.next
    rest = await call.query_members(sort=[("user_id", 1)], limit=2, next=first.next)
    assert [m.user_id for m in rest.members] == ["carol"]
    everyone = [m.user_id async for m in call.iter_members(sort=[("user_id", 1)], page_size=1)]
    assert everyone == ["alice", "bob", "carol"]


async def test_query_calls(make_client: MakeClient) -> None:
    client = make_client("door")
    await client.call("default", "q-1").create(member_ids=["alice"], custom={"kind": "door"})
    await client.call("default", "q-2").create(member_ids=["bob"], custom={"kind": "bed"})
    page = await client.query_calls({"custom.kind": "door"}, sort=[("created_at", -1)], limit=10)
    assert [c.call.cid for c in page.calls] == ["default:q-1"]
    both = await client.query_calls(sort=[("created_at", 1)], limit=1)
    assert [c.call.cid for c in both.calls] == ["default:q-1"]
    assert both.next
    following = await client.query_calls(sort=[("created_at", 1)], limit=1, next=both.next)
    assert [c.call.cid for c in following.calls] == ["default:q-2"]
    every = [c.call.cid async for c in client.iter_calls(sort=[("created_at", -1)], page_size=1)]
    assert every == ["default:q-2", "default:q-1"]


async def test_upsert_users(make_client: MakeClient) -> None:
    users = await make_client().upsert_users(
        User(id="visitor", name="Visitor", custom={"badge": 7}), {"id": "porter", "role": "user"}
    )
    assert users["visitor"].custom == {"badge": 7}
    assert users["porter"].role == "user"


async def test_join_leave_ring_accept_end_send_event_delete(make_client: MakeClient) -> None:
    door = make_client("door")
    alice = make_client("alice")
    door_call = door.call("default", "door-1")
    await door_call.create(member_ids=["alice"], members=[DOOR_ADMIN])
    joined = await door_call.join()
    assert joined.session_id
    assert joined.call.current_session_id
    alice_events = alice.events({"call.ring", "call.accepted", "custom", "call.ended"})
    await alice.connect()
    await door_call.ring(["alice"])
    ring = await next_event(alice_events)
    assert (ring.type, ring.cid) == ("call.ring", "default:door-1")
    assert ring.user is not None and ring.user.id == "door"
    alice_call = alice.call("default", "door-1")
    await alice_call.accept()
    accepted = await next_event(alice_events)
    assert accepted.type == "call.accepted" and accepted.user is not None
    assert accepted.user.id == "alice"
    state = await alice_call.get()
    session = state.call.session
    assert session is not None and set(session.accepted_by) == {"alice"}
    alice_join = await alice_call.join()
    assert [p.session_id for p in alice_join.participants if p.user_id == "door"] == [
        joined.session_id
    ]
    await door_call.send_event({"type": "unlock"})
    custom = await next_event(alice_events)
    assert custom.type == "custom" and custom.custom == {"type": "unlock"}
    await alice_call.leave()
    await door_call.end()
    ended = await next_event(alice_events)
    assert ended.type == "call.ended"
    assert (await door_call.get()).call.ended_at is not None
    await door_call.delete(hard=True)


async def test_reject_ends_a_ring_nobody_accepts(make_client: MakeClient) -> None:
    door = make_client("door")
    alice = make_client("alice")
    events = door.events({"call.rejected", "call.ended"})
    await door.connect()
    await door.call("default", "door-2").create(
        member_ids=["alice"], members=[DOOR_ADMIN], ring=True
    )
    await alice.call("default", "door-2").reject()
    rejected = await next_event(events)
    assert (rejected.type, rejected.reason) == ("call.rejected", "decline")
    assert rejected.user is not None and rejected.user.id == "alice"
    ended = await next_event(events)
    assert (ended.type, ended.reason) == ("call.ended", "rejected")
    state = (await door.call("default", "door-2").get()).call
    assert state.session is not None and set(state.session.rejected_by) == {"alice"}


async def test_caller_who_is_not_a_member_hears_the_end(make_client: MakeClient) -> None:
    door = make_client("door")
    events = door.events({"call.ended"})
    await door.connect()
    await door.call("default", "door-3").create(member_ids=["alice"], ring=True)
    await make_client("alice").call("default", "door-3").reject()
    ended = await next_event(events)
    assert (ended.type, ended.reason) == ("call.ended", "rejected")
