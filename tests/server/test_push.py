"""Rings reach phones through Web Push: every ring and every end of a ring, encrypted, to each
subscription of the ringed users, through the push-service stand-in on loopback.

The server is real (uvicorn, SQLite file) on a ManualClock, so ring timeouts and retry
backoff move only when a test says so. The stand-in checks what a real push service checks
(VAPID JWT, TTL, aes128gcm) and decrypts with the keys the test made. "Nothing more arrived"
is asserted after ``PushSender.idle()``: everything submitted has been delivered or given up.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from appliance.client import Client
from appliance.clock import ManualClock
from appliance.server.lifecycle.services import services
from appliance.server.outbound.pushsender import PushSender
from tests.server.test_push_devices import device_body
from tests.server.wsclient import QUIET, WsClient, call_post, create_call
from tests.support.pushservice import Message, PushService, until
from tests.support.server import ServerHandle, running_server

CID = "default:front"
NS = 1_000_000_000
USERS = [
    {"id": "alice", "name": "Alice"},
    {"id": "bob", "name": "Bob"},
    {"id": "carol", "name": "Carol"},
    {"id": "door-1", "name": "Front door", "custom": {"device": {"relay": True}}},
]
RING = {"ring": {"incoming_call_timeout_ms": 10_000, "auto_cancel_timeout_ms": 30_000}}
SUBJECT = "mailto:ops@example.org"


@dataclass
class Env:
    srv: ServerHandle
    push: PushService

    @property
    def pusher(self) -> PushSender:
        sender = services(self.srv.ctx).push
        assert isinstance(sender, PushSender)
        return sender

    def advance(self, seconds: float) -> None:
        clock = self.srv.clock
        assert isinstance(clock, ManualClock)
        clock.advance(seconds)

    async def subscribe(self, user: str) -> dict[str, Any]:
        sub, _ = self.push.make_subscription(user)
        async with self.srv.client(user) as http:
            r = await http.post("/api/v2/devices", json=device_body(sub))
        assert r.status_code == 201, r.text
        return sub

    async def ring(self, caller: str = "door-1") -> None:
        r = await call_post(self.srv, caller, CID, "ring", {"video": True})
        assert r.status_code == 200, r.text

    async def quiet(self) -> list[Message]:
        """Once everything submitted so far is done: every message received."""
        await self.pusher.idle()
        return list(self.push.received)


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with PushService() as push:
        async with running_server(
            tmp_path,
            users=USERS,
            clock=ManualClock(),
            ws_health_seconds=QUIET,
            push={"allowed_hosts": [push.origin], "vapid_subject": SUBJECT},
        ) as srv:
            async with srv.client("alice") as http:
                app = (await http.get("/api/v2/app")).json()
            push.vapid_public_key = app["app"]["web_push"]["vapid_public_key"]
            await create_call(
                srv, CID, ["door-1", "alice", "bob"], by="door-1", settings_override=RING
            )
            yield Env(srv, push)


def rings(m: Message) -> bool:
    return isinstance(m.payload, dict) and m.payload.get("type") == "call.ring"


def stops(m: Message) -> bool:
    return isinstance(m.payload, dict) and m.payload.get("type") == "call.ring_stopped"


async def test_a_ring_reaches_every_subscription_of_every_ringed_user(env: Env) -> None:
    alice_phone = await env.subscribe("alice")
    alice_laptop = await env.subscribe("alice")
    bob_phone = await env.subscribe("bob")
    await env.subscribe("carol")  # not a member: never rung
    alice_ws = await WsClient.open(env.srv, "alice")
    rung_at = int(env.srv.clock.time() * NS)
    await env.ring()
    ws_ring = await alice_ws.next("call.ring")
    got = await env.push.wait_count(rings, 3)
    assert {m.endpoint for m in got} == {
        alice_phone["endpoint"],
        alice_laptop["endpoint"],
        bob_phone["endpoint"],
    }
    for m in got:
        assert m.payload == {
            "type": "call.ring",
            "call_cid": CID,
            "session_id": ws_ring["session_id"],
            "caller": {"id": "door-1", "name": "Front door"},
            "custom": {},
            "video": True,
            "created_at": rung_at,
            "expires_at": rung_at + 10 * NS,  # incoming_call_timeout_ms
        }
        assert (m.ttl, m.urgency) == (10, "high")
        assert m.topic is not None and len(m.topic) == 32
        assert m.claims["aud"] == env.push.origin and m.claims["sub"] == SUBJECT
    topics = {m.user: m.topic for m in got}
    assert len({m.topic for m in got if m.user == "alice"}) == 1
    assert topics["alice"] != topics["bob"]
    assert sorted(m.user for m in await env.quiet()) == ["alice", "alice", "bob"]
    assert env.pusher.key.signed == 1  # one VAPID signature for the three requests


async def test_an_accept_stops_everyone_elses_ring(env: Env) -> None:
    await env.subscribe("alice")
    await env.subscribe("bob")
    await env.ring()
    ringing = {m.user: m for m in await env.push.wait_count(rings, 2)}
    r = await call_post(env.srv, "bob", CID, "accept")
    assert r.status_code == 200, r.text
    stopped = {m.user: m for m in await env.push.wait_count(stops, 2)}
    for user in ("alice", "bob"):  # bob's other devices stop ringing too
        assert stopped[user].payload == {
            "type": "call.ring_stopped",
            "call_cid": CID,
            "session_id": ringing[user].payload["session_id"],
            "reason": "accepted",
        }
        assert stopped[user].topic == ringing[user].topic
        assert stopped[user].urgency == "high"
    assert len(await env.quiet()) == 4


async def test_a_decline_stops_only_that_users_ring(env: Env) -> None:
    await env.subscribe("alice")
    await env.subscribe("bob")
    await env.ring()
    await env.push.wait_count(rings, 2)
    r = await call_post(env.srv, "alice", CID, "reject", {"reason": "decline"})
    assert r.status_code == 200, r.text
    stop = await env.push.wait_for(stops)
    assert (stop.user, stop.payload["reason"]) == ("alice", "rejected")
    assert [m.user for m in await env.quiet() if stops(m)] == ["alice"]


async def test_a_ring_nobody_answers_is_missed(env: Env) -> None:
    await env.subscribe("alice")
    await env.subscribe("bob")
    await env.ring()
    await env.push.wait_count(rings, 2)
    env.advance(11)
    missed = await env.push.wait_count(stops, 2)
    for m in missed:
        assert m.payload["reason"] == "missed"
        assert (m.ttl, m.urgency) == (86_400, "normal")


async def test_the_caller_hanging_up_cancels(env: Env) -> None:
    await env.subscribe("alice")
    await env.ring()
    await env.push.wait_for(rings)
    r = await call_post(env.srv, "door-1", CID, "reject", {"reason": "cancel"})
    assert r.status_code == 200, r.text
    stop = await env.push.wait_for(stops)
    assert (stop.user, stop.payload["reason"]) == ("alice", "cancelled")


@pytest.mark.parametrize("status", [404, 410])
async def test_a_gone_subscription_is_deleted(env: Env, status: int) -> None:
    gone = await env.subscribe("alice")
    kept = await env.subscribe("alice")
    env.push.answer(status, endpoint=gone["endpoint"])
    await env.ring()
    await env.push.wait_for(lambda m: m.endpoint == kept["endpoint"])
    await env.quiet()
    assert [a.status for a in env.push.attempts if a.endpoint == gone["endpoint"]] == [status]
    assert env.pusher.removed == 1
    async with env.srv.client("alice") as http:
        left = [d["id"] for d in (await http.get("/api/v2/devices")).json()["devices"]]
    assert left == [kept["endpoint"]]


@pytest.mark.parametrize(("status", "retry_after", "wait"), [(429, 3, 3.1), (500, None, 1.0)])
async def test_refusals_are_retried_while_the_ring_lasts(
    env: Env, status: int, retry_after: float | None, wait: float
) -> None:
    await env.subscribe("alice")
    env.push.answer(status, retry_after=retry_after)
    await env.ring()
    await env.push.wait_attempts(lambda m: m.status == status, 1)
    await until(lambda: env.pusher.retried == 1)  # asleep on the ManualClock
    assert env.push.received == []
    env.advance(wait)
    got = await env.push.wait_for(rings)
    assert got.ttl == 10 - int(wait)  # the TTL counts down with the ring
    assert [a.status for a in env.push.attempts] == [status, 201]


async def test_retries_end_with_the_ring(env: Env) -> None:
    await env.subscribe("alice")
    env.push.answer(503, times=1000)
    await env.ring()
    retried = 0
    while True:
        await until(lambda seen=retried: env.pusher.retried > seen or env.pusher.failed > 0)
        if env.pusher.failed:
            break
        retried = env.pusher.retried
        env.advance(0.6 * 2 ** (retried - 1))  # the longest the k-th backoff can be
        await env.push.wait_attempts(lambda m: m.status == 503, retried + 1)
    # 0.5, 1, 2, 4 s (±20 %) fit in the 10 s ring, the next would not: five attempts
    assert [a.status for a in env.push.attempts] == [503] * 5
    env.advance(60)
    await env.quiet()
    assert len(env.push.attempts) == 5 and env.pusher.failed == 1


async def test_revoked_tokens_silence_the_phone(env: Env) -> None:
    await env.subscribe("alice")
    await env.subscribe("bob")
    await env.ring()
    assert sorted(m.user for m in await env.push.wait_count(rings, 2)) == ["alice", "bob"]
    r = await call_post(env.srv, "door-1", CID, "reject", {"reason": "cancel"})
    assert r.status_code == 200, r.text
    await env.quiet()
    async with env.srv.client() as http:
        r = await http.post("/api/v2/users/revoke_tokens", json={"user_ids": ["bob"]})
    assert r.status_code == 200, r.text
    env.advance(1)
    await env.ring()
    await env.push.wait_count(rings, 3)
    assert sorted(m.user for m in await env.quiet() if rings(m)) == ["alice", "alice", "bob"]


async def test_a_hanging_push_service_never_delays_the_websocket_ring(env: Env) -> None:
    await env.subscribe("alice")
    await env.subscribe("bob")
    env.push.hold()
    alice_ws = await WsClient.open(env.srv, "alice")
    bob_ws = await WsClient.open(env.srv, "bob")
    await env.ring()  # answered while the push requests hang
    await alice_ws.next("call.ring")
    await bob_ws.next("call.ring")
    await until(lambda: env.push.holding == 2)
    assert env.push.received == []  # the pushes were sent, and are still hanging
    r = await call_post(env.srv, "bob", CID, "accept")
    assert r.status_code == 200 and (await alice_ws.next("call.accepted"))
    env.push.release()
    got = await env.push.wait_count(lambda m: True, 4)
    # the stop waited for the ring on the same subscription: in order per user
    for user in ("alice", "bob"):
        mine = [m.payload["type"] for m in got if m.user == user]
        assert mine == ["call.ring", "call.ring_stopped"], mine


async def test_custom_data_too_big_for_a_push_is_trimmed(env: Env) -> None:
    await env.subscribe("alice")
    async with env.srv.client() as http:
        r = await http.patch(
            f"/api/v2/video/call/{CID.replace(':', '/')}", json={"custom": {"note": "x" * 4000}}
        )
    assert r.status_code == 200, r.text
    await env.ring()
    got = await env.push.wait_for(rings)
    assert got.payload["custom"] == {} and got.payload["custom_trimmed"] is True
    small = {"floor": 2, "door": "north"}
    async with env.srv.client() as http:
        await http.patch(f"/api/v2/video/call/{CID.replace(':', '/')}", json={"custom": small})
    r = await call_post(env.srv, "door-1", CID, "reject", {"reason": "cancel"})
    env.advance(1)
    await env.ring()
    again = await env.push.wait_count(rings, 2)
    assert again[1].payload["custom"] == small and "custom_trimmed" not in again[1].payload


async def test_no_endpoint_secret_in_the_logs(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")  # what a server logs (DEBUG of the database driver shows its SQL)
    subs = [await env.subscribe("alice"), await env.subscribe("bob")]
    env.push.answer(410, endpoint=subs[1]["endpoint"])
    env.push.answer(500, endpoint=subs[0]["endpoint"])
    await env.ring()
    await until(lambda: env.pusher.retried == 1 and env.pusher.removed == 1)
    env.advance(1)
    await env.push.wait_for(rings)
    async with env.srv.client("alice") as http:
        await http.delete("/api/v2/devices", params={"id": subs[0]["endpoint"]})
    # Everything but this test's own client's request lines (to the server's base URL).
    text = "\n".join(
        r.getMessage()
        for r in caplog.records
        if not (r.name == "httpx" and env.srv.base_url in r.getMessage())
    )
    assert "retry in" in text and "gone" in text  # the push path did log
    for sub in subs:
        secret_part = sub["endpoint"].rsplit("/", 1)[1]
        for value in (secret_part, sub["keys"]["p256dh"], sub["keys"]["auth"]):
            assert value not in text


async def test_a_kiosk_rings_two_residents_and_one_answers(env: Env) -> None:
    """The issue's end to end at server level: the door's own client (a device user, the
    daemon's ``Client``) rings; both residents' phones get the encrypted ring; one accepts;
    the other's phone gets ``call.ring_stopped``."""
    await env.subscribe("alice")
    await env.subscribe("bob")
    door = Client(env.srv.base_url, env.srv.api_key, env.srv.user_token("door-1"))
    try:
        await door.call("default", "front").ring(["alice", "bob"], video=True)
    finally:
        await door.aclose()
    got = await env.push.wait_count(rings, 2)
    assert {m.user for m in got} == {"alice", "bob"}
    assert all(m.payload["caller"]["name"] == "Front door" for m in got)
    r = await call_post(env.srv, "alice", CID, "accept")
    assert r.status_code == 200, r.text
    stop = await env.push.wait_for(lambda m: stops(m) and m.user == "bob")
    assert stop.payload["reason"] == "accepted"
    assert json.loads(stop.text) == stop.payload  # what a service worker would be handed


async def test_a_host_taken_off_the_list_is_not_contacted(env: Env) -> None:
    await env.subscribe("alice")
    await env.ring()
    await env.push.wait_for(rings)  # reachable while on the list
    r = await call_post(env.srv, "door-1", CID, "reject", {"reason": "cancel"})
    assert r.status_code == 200, r.text
    await env.quiet()
    seen = len(env.push.attempts)
    env.srv.ctx.settings.push.allowed_hosts = ["fcm.googleapis.com"]  # the operator's change
    env.advance(1)
    await env.ring()
    await env.quiet()
    assert len(env.push.attempts) == seen


# A member removed while the call rings them stops ringing: on their sockets (a call.rejected of
# their own, reason "removed", that every client takes as "my ring is over"), on their phones
# (ring_stopped "ended"), in the store (no resend on a new socket, no call.missed later); the
# others keep ringing, and the attempt ends once nobody rings.


async def remove(env: Env, *user_ids: str) -> None:
    r = await call_post(env.srv, None, CID, "members", {"remove_members": list(user_ids)})
    assert r.status_code == 200, r.text


async def test_a_removed_member_stops_ringing_everywhere(env: Env) -> None:
    await env.subscribe("alice")
    await env.subscribe("bob")
    alice = await WsClient.open(env.srv, "alice")
    bob = await WsClient.open(env.srv, "bob")
    await env.ring()
    await alice.next("call.ring")
    await bob.next("call.ring")
    await env.push.wait_count(rings, 2)

    await remove(env, "alice")

    over = await alice.next("call.rejected")
    assert (over["user"]["id"], over["reason"]) == ("alice", "removed")
    stop = await env.push.wait_for(stops)
    assert (stop.user, stop.payload["reason"]) == ("alice", "ended")
    assert "call.rejected" not in await bob.types()  # bob still rings
    again = await WsClient.open(env.srv, "alice")
    assert "call.ring" not in await again.types()  # no resend to a new socket of alice's
    env.advance(11)  # bob's deadline: only bob misses the ring
    missed = await bob.next("call.missed")
    assert missed["user"]["id"] == "bob"
    await env.push.wait_count(stops, 2)
    assert sorted(m.user for m in await env.quiet() if stops(m)) == ["alice", "bob"]
    for ws in (alice, bob, again):
        await ws.close()


async def test_removing_the_last_one_ringing_ends_the_attempt(env: Env) -> None:
    bob = await WsClient.open(env.srv, "bob")
    await env.ring()
    await bob.next("call.ring")
    await remove(env, "alice", "bob")
    assert (await bob.next("call.rejected"))["reason"] == "removed"
    door = await WsClient.open(env.srv, "door-1")
    async with env.srv.client(None) as http:
        r = await http.get(f"/api/v2/video/call/{CID.replace(':', '/')}")
    assert r.json()["call"]["session"]["ended_at"] is not None, r.text
    await door.close()
    await bob.close()
