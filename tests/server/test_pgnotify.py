"""Fan-out across two server replicas sharing one PostgreSQL database (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import event, update
from websockets.exceptions import ConnectionClosed

from appliance.clock import ManualClock
from appliance.server.lifecycle.services import services
from appliance.server.realtime.pgnotify import CHUNK_BYTES, Reassembler, chunks
from appliance.server.store.schema import participants, users
from tests.server.wsclient import QUIET, WsClient, call_post, create_call, join
from tests.support.pgcluster import PostgresCluster
from tests.support.poll import until
from tests.support.server import ServerHandle, running_server

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

USERS = ["alice", "bob", "carol"]
CID = "default:fleet"
# Devices in no call (a burst of connects, as after a proxy restart).
IDLE = [f"idle-{i}" for i in range(12)]


def test_chunks_reassemble_in_order_and_fit_notify() -> None:
    text = "".join(chr(32 + i % 90) for i in range(3 * CHUNK_BYTES + 123))
    parts = chunks(text)
    assert len(parts) == 4
    assert all(len(p.encode()) < 8000 for p in parts)
    r = Reassembler()
    assert [r.feed(p) for p in parts[:-1]] == [None, None, None]
    assert r.feed(parts[-1]) == text
    assert Reassembler().feed(chunks("short")[0]) == "short"


@pytest.fixture(scope="module")
def cluster(postgres: PostgresCluster) -> PostgresCluster:
    return postgres


@pytest_asyncio.fixture
async def replicas(
    tmp_path: Path, cluster: PostgresCluster
) -> AsyncIterator[tuple[ServerHandle, ServerHandle]]:
    url = cluster.create_database("t" + uuid.uuid4().hex[:10])
    clock = ManualClock()  # one clock for the fleet, so both schedulers see the same time
    common = {
        "users": USERS + IDLE,
        "clock": clock,
        "database": url,
        "api_secret": "fleet-secret-of-at-least-32-bytes-long",
        "ws_health_seconds": QUIET,
    }
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_server(tmp_path / "a", **common))  # type: ignore[arg-type]
        b = await stack.enter_async_context(running_server(tmp_path / "b", **common))  # type: ignore[arg-type]
        yield a, b


async def test_ring_on_one_replica_rings_a_socket_on_the_other(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    a, b = replicas
    await create_call(a, CID, USERS)
    bob_on_b = await WsClient.open(b, "bob")
    carol_on_a = await WsClient.open(a, "carol")
    r = await call_post(a, "alice", CID, "ring", {"members_ids": ["bob", "carol"]})
    assert r.status_code == 200, r.text
    ring_b = await bob_on_b.next("call.ring")
    ring_a = await carol_on_a.next("call.ring")
    assert ring_b["session_id"] == ring_a["session_id"]
    assert ring_b["user"]["id"] == "alice"
    assert ring_b["call"]["cid"] == CID
    # accept on replica B reaches carol on replica A
    r = await call_post(b, "bob", CID, "accept")
    assert r.status_code == 200, r.text
    assert (await carol_on_a.next("call.accepted"))["user"]["id"] == "bob"


async def test_presence_is_known_fleet_wide(replicas: tuple[ServerHandle, ServerHandle]) -> None:
    a, b = replicas
    await create_call(a, CID, USERS)
    alice_on_a = await WsClient.open(a, "alice")
    presence_a = a.ctx.presence
    bob_on_b = await WsClient.open(b, "bob")
    changed = await alice_on_a.next("user.presence.changed")
    assert changed["user"]["id"] == "bob" and changed["user"]["online"] is True
    await until(lambda: presence_a.is_online("bob"), what="replica A sees bob online")
    await bob_on_b.close()
    await until(lambda: not presence_a.is_online("bob"), what="replica A sees bob offline")


async def test_large_signal_crosses_replicas_in_chunks(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    a, b = replicas
    await create_call(a, CID, USERS)
    alice_on_a = await WsClient.open(a, "alice")
    bob_on_b = await WsClient.open(b, "bob")
    ja = await join(a, alice_on_a, CID)
    jb = await join(b, bob_on_b, CID)  # bob's join goes to the replica holding his socket
    assert [p["user_session_id"] for p in jb["participants"]] == [ja["session_id"]]
    sdp = "v=0\r\n" + "".join(
        f"a=candidate:{i} 1 udp 2122260223 10.0.0.{i % 250} 5000{i % 10} typ host\r\n"
        for i in range(600)
    )
    assert len(sdp) > 3 * 8000
    await alice_on_a.send(
        {
            "type": "signal",
            "call_cid": CID,
            "to": jb["session_id"],
            "signal": {"kind": "offer", "sdp": sdp},
        }
    )
    got = await bob_on_b.next("call.signal")
    assert got["signal"]["sdp"] == sdp
    assert got["from"] == ja["session_id"]
    fanout = services(b.ctx).fanout
    assert fanout.received > 0


async def test_a_deadline_fires_once_in_the_fleet(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    a, b = replicas
    ring = {"ring": {"incoming_call_timeout_ms": 10_000, "auto_cancel_timeout_ms": 60_000}}
    await create_call(a, CID, USERS, settings_override=ring)
    bob_on_b = await WsClient.open(b, "bob")
    r = await call_post(a, "alice", CID, "ring", {"members_ids": ["bob", "carol"]})
    assert r.status_code == 200
    await bob_on_b.next("call.ring")
    assert isinstance(a.clock, ManualClock)
    a.clock.advance(11)  # both replicas' schedulers wake for the same deadlines
    missed = [await bob_on_b.next("call.missed"), await bob_on_b.next("call.missed")]
    assert sorted(m["user"]["id"] for m in missed) == ["bob", "carol"]
    assert (await bob_on_b.next("call.ended"))["reason"] == "timeout"
    rest = await bob_on_b.settle()
    assert [f["type"] for f in rest if f["type"] in ("call.missed", "call.ended")] == []


async def test_participants_of_a_vanished_replica_get_the_grace_period(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    a, b = replicas
    await create_call(a, CID, USERS)
    alice_on_a = await WsClient.open(a, "alice")
    bob_on_b = await WsClient.open(b, "bob")
    carol_on_a = await WsClient.open(a, "carol")
    ja = await join(a, alice_on_a, CID)
    jb = await join(b, bob_on_b, CID)
    fanout_a = services(a.ctx).fanout
    await until(
        lambda: services(b.ctx).hub.replica_prefix in fanout_a.live_replica_prefixes(),
        what="A hears B",
    )
    # alice's connection now belongs to a replica that crashed (nobody hears from it)
    async with a.ctx.store.begin() as db:
        await db.execute(
            update(participants)
            .where(participants.c.id == ja["session_id"])
            .values(connection_id="deadbeef0000-0000")
        )
    assert await fanout_a.sweep_orphans() == 1  # bob's replica B is alive: his stays
    assert isinstance(a.clock, ManualClock)
    a.clock.advance(21)
    left = await carol_on_a.next("call.session_participant_left")
    assert left["participant"]["user_session_id"] == ja["session_id"]
    assert [
        f
        for f in await bob_on_b.settle()
        if f["type"] == "call.session_participant_left"
        and f["participant"]["user_session_id"] == jb["session_id"]
    ] == []


async def test_racing_joins_on_two_replicas_share_one_session(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    a, b = replicas
    for n in range(3):
        cid = f"default:race-{n}"
        await create_call(a, cid, USERS)
        alice_on_a = await WsClient.open(a, "alice")
        bob_on_b = await WsClient.open(b, "bob")
        ja, jb = await asyncio.gather(join(a, alice_on_a, cid), join(b, bob_on_b, cid))
        assert ja["call_session_id"] == jb["call_session_id"]  # not two sessions
        listed = [p["user_session_id"] for p in ja["participants"] + jb["participants"]]
        assert listed in ([ja["session_id"]], [jb["session_id"]])  # exactly one offers
        await alice_on_a.close()
        await bob_on_b.close()


async def test_revoking_on_one_replica_closes_the_socket_on_the_other(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    a, b = replicas
    await create_call(a, CID, USERS)
    bob_on_b = await WsClient.open(b, "bob")
    carol_on_b = await WsClient.open(b, "carol")
    async with a.client() as admin:
        r = await admin.post("/api/v2/users/revoke_tokens", json={"user_ids": ["bob"]})
    assert r.status_code == 200, r.text
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frame = await bob_on_b.next()
            if frame["type"] == "connection.error":
                assert "revoked" in frame["message"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert services(b.ctx).hub.tokens.dropped == 1
    assert (await call_post(a, "alice", CID, "ring", {"members_ids": ["carol"]})).status_code == 200
    assert (await carol_on_b.next("call.ring"))["user"]["id"] == "alice"


async def test_a_revocation_whose_notification_was_lost_is_applied_at_the_recheck(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    """Stored revocations are re-read when LISTEN reconnects and every presence period."""
    a, b = replicas
    bob_on_b = await WsClient.open(b, "bob")
    assert await bob_on_b.types() == []  # a barrier: its open hooks (one recheck) have run
    async with a.ctx.store.begin() as db:  # as if the NOTIFY had been lost
        await db.execute(
            update(users)
            .where(users.c.id == "bob")
            .values(revoke_tokens_issued_before=int((a.clock.time() + 1) * 1e9))
        )
    assert await services(b.ctx).hub.tokens.recheck() == 1
    with pytest.raises(ConnectionClosed):
        while True:
            await bob_on_b.next()


def _received(srv: ServerHandle, kind: str) -> float:
    figures = srv.ctx.metrics
    assert figures is not None
    value = figures.registry.get_sample_value("appliance_notify_received_total", {"kind": kind})
    return value or 0.0


async def test_a_burst_of_connects_is_announced_in_a_few_presence_messages(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    """A presence message per connect was sent before (12 here); now a burst is coalesced."""
    a, b = replicas
    before = _received(a, "presence")
    presence_a = a.ctx.presence
    devices = await asyncio.gather(*(WsClient.open(b, u) for u in IDLE))
    await until(lambda: all(presence_a.is_online(u) for u in IDLE), what="A sees them online")
    assert _received(a, "presence") - before < len(IDLE) / 2
    await asyncio.gather(*(d.close() for d in devices))
    await until(lambda: not any(presence_a.is_online(u) for u in IDLE), what="A sees them gone")
    assert _received(a, "presence") - before < len(IDLE)


async def test_a_connect_in_no_call_costs_the_other_replica_no_query(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    """``user.presence.changed`` goes to call-mates named by the connecting replica: a device
    in no call makes no event, so no replica resolves a target for it (each did, before)."""
    a, b = replicas
    await create_call(a, CID, USERS)
    alice_on_a = await WsClient.open(a, "alice")
    statements: list[str] = []

    def on_statement(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        statements.append(statement)

    engine = a.ctx.store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        device = await WsClient.open(b, IDLE[0])
        await until(lambda: a.ctx.presence.is_online(IDLE[0]), what="A sees it")
        await device.close()
        await until(lambda: not a.ctx.presence.is_online(IDLE[0]), what="gone")
        # Call-mates are still told, by name: bob connecting on B reaches alice on A.
        bob_on_b = await WsClient.open(b, "bob")
        changed = await alice_on_a.next("user.presence.changed")
        assert changed["user"]["id"] == "bob" and changed["user"]["online"] is True
        await bob_on_b.close()
        changed = await alice_on_a.next("user.presence.changed")
        assert changed["user"]["id"] == "bob" and changed["user"]["online"] is False
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
    assert [s for s in statements if "call_members" in s] == []


async def test_events_do_not_wait_behind_presence(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    """Presence has its own NOTIFY connection: with it stuck, a ring still crosses replicas."""
    a, b = replicas
    await create_call(b, CID, USERS)
    bob_on_a = await WsClient.open(a, "bob")
    fanout_b = services(b.ctx).fanout
    async with fanout_b._presence_notify.lock:  # a slow presence send, held
        device = await WsClient.open(b, IDLE[1])  # its presence waits
        r = await call_post(b, "alice", CID, "ring", {"members_ids": ["bob"]})
        assert r.status_code == 200, r.text
        ring = await asyncio.wait_for(bob_on_a.next("call.ring"), 5.0)
        assert ring["user"]["id"] == "alice"
        assert not a.ctx.presence.is_online(IDLE[1])
    await until(lambda: a.ctx.presence.is_online(IDLE[1]), what="presence follows")
    await device.close()


async def test_the_other_replicas_notification_leaves_before_the_local_sockets_are_served(
    replicas: tuple[ServerHandle, ServerHandle],
) -> None:
    """A ring's NOTIFY is on its way before the serving replica writes to its own sockets: the
    callees on the other replicas do not wait for the local fan-out (``Hub.publish_batch``)."""
    a, b = replicas
    carol_on_a = await WsClient.open(a, "carol")
    bob_on_b = await WsClient.open(b, "bob")
    order: list[str] = []
    notifier = services(a.ctx).fanout._event_notify
    notify = notifier.execute

    async def recording_notify(query: str, params: list[str]) -> None:
        order.append("notify")
        await notify(query, params)

    conn = services(a.ctx).hub.connections[carol_on_a.connection_id]
    send_text = conn.send_text

    def recording_send(text: str) -> bool:
        if '"type":"call.' in text[:20]:  # the ring's events, not presence
            order.append("local")
        return send_text(text)

    notifier.execute = recording_notify  # type: ignore[method-assign]
    conn.send_text = recording_send  # type: ignore[method-assign]
    body = {"data": {"members": [{"user_id": u} for u in USERS]}, "ring": True}
    async with a.client("alice") as http:
        r = await http.post("/api/v2/video/call/default/fleet-ring", json=body)
    assert r.status_code in (200, 201), r.text
    await carol_on_a.next("call.ring")
    await bob_on_b.next("call.ring")
    # the setup carries what it checks: the ring was written to carol here and notified once
    assert "local" in order and "notify" in order, order
    assert order[0] == "notify", order
