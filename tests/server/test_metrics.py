"""``GET /metrics``: counters move by exactly what happened, labels carry route templates (no
ids, no tokens), live figures come from the running server, and only the allowed may read it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from pydantic import ValidationError

from appliance.clock import ManualClock
from appliance.server.lifecycle.services import services
from appliance.server.settings import ServerSettings
from tests.server.wsclient import QUIET, WsClient, call_post, create_call
from tests.support.metrics import Samples, delta, samples, value
from tests.support.server import ServerHandle, running_server

USERS = ["alice", "bob", "carol"]
RING = {"ring": {"incoming_call_timeout_ms": 10_000, "auto_cancel_timeout_ms": 30_000}}
METRICS_TOKEN = "metrics-token-0123456789"


CALLS = ("default:m-1", "default:m-2", "default:m-3")


@pytest_asyncio.fixture
async def srv(tmp_path) -> AsyncIterator[ServerHandle]:
    """A server on a ManualClock (ring timeouts and answer times move with it) and three calls."""
    clock = ManualClock()
    async with running_server(tmp_path, users=USERS, clock=clock, ws_health_seconds=QUIET) as s:
        for cid in CALLS:
            await create_call(s, cid, USERS, settings_override=RING)
        yield s


async def scrape(srv: ServerHandle, **headers: str) -> Samples:
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=10.0) as http:
        r = await http.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return samples(r.text)


async def _ring(srv: ServerHandle, cid: str, *callees: str) -> None:
    r = await call_post(srv, "alice", cid, "ring", {"members_ids": list(callees)})
    assert r.status_code == 200, r.text


async def test_rings_answered_missed_rejected_counted_once_each(srv: ServerHandle) -> None:
    clock = srv.clock
    assert isinstance(clock, ManualClock)
    alice = await WsClient.open(srv, "alice")
    before = await scrape(srv)

    # answered after 3 s (carol's ring then stops: cancelled, not missed)
    await _ring(srv, "default:m-1", "bob", "carol")
    clock.advance(3)
    r = await call_post(srv, "bob", "default:m-1", "accept")
    assert r.status_code == 200, r.text
    await alice.next("call.accepted")
    # declined
    await _ring(srv, "default:m-2", "carol")
    r = await call_post(srv, "carol", "default:m-2", "reject", {"reason": "decline"})
    assert r.status_code == 200, r.text
    await alice.next("call.rejected")
    # both callees miss it
    await _ring(srv, "default:m-3", "bob", "carol")
    clock.advance(10.5)
    for _ in range(2):
        await alice.next("call.missed")
    await alice.next("call.ended")

    after = await scrape(srv)
    t = {"call_type": "default"}
    assert delta(before, after, "appliance_rings_started_total", **t) == 3
    assert delta(before, after, "appliance_rings_answered_total", **t) == 1
    assert delta(before, after, "appliance_rings_rejected_total", **t) == 1
    assert delta(before, after, "appliance_rings_missed_total", **t) == 2
    assert delta(before, after, "appliance_ring_answer_seconds_count", **t) == 1
    assert delta(before, after, "appliance_ring_answer_seconds_sum", **t) == pytest.approx(3.0)
    assert delta(before, after, "appliance_ring_answer_seconds_bucket", le="3.0", **t) == 1
    assert delta(before, after, "appliance_ring_answer_seconds_bucket", le="2.0", **t) == 0
    await alice.close()


async def test_request_latency_is_labelled_with_the_route_template(srv: ServerHandle) -> None:
    await create_call(srv, "default:secret-room-42", USERS)
    token = srv.user_token("alice")
    before = await scrape(srv)
    async with srv.client("alice") as http:
        for _ in range(2):
            r = await http.get("/api/v2/video/call/default/secret-room-42")
            assert r.status_code == 200, r.text
        assert (await http.get("/api/v2/video/call/default/nowhere-7")).status_code == 404
        assert (await http.get("/no/such/path-99")).status_code == 404
        assert (await http.request("TRACE", "/healthz")).status_code == 405
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        text = (await http.get("/metrics")).text
    after = await scrape(srv)
    route = "/api/v2/video/call/{type}/{id}"
    name = "appliance_http_request_duration_seconds_count"
    assert delta(before, after, name, method="GET", route=route, status="200") == 2
    assert delta(before, after, name, method="GET", route=route, status="404") == 1
    assert delta(before, after, name, method="GET", route="(no route)", status="404") == 1
    assert delta(before, after, name, method="OTHER", route="(no route)", status="405") == 1
    for secret in ("secret-room-42", "nowhere-7", "path-99", token, srv.api_secret):
        assert secret not in text


async def test_live_figures_come_from_the_running_server(srv: ServerHandle) -> None:
    clients = [await WsClient.open(srv, u) for u in ("alice", "bob", "bob")]
    found = await scrape(srv)
    assert value(found, "appliance_ws_connections") == 3
    assert value(found, "appliance_ws_users") == 2
    prefix = services(srv.ctx).hub.replica_prefix
    assert value(found, "appliance_replica_info", replica=prefix, store="sqlite") == 1
    assert ("appliance_ws_send_queue_frames_max", frozenset()) in found
    assert value(found, "appliance_db_pool_size", dialect="sqlite") >= 1
    assert ("appliance_db_pool_checked_out", frozenset({("dialect", "sqlite")})) in found
    assert value(found, "process_cpu_seconds_total") > 0
    assert ("appliance_push_sends_total", frozenset({("outcome", "sent")})) in found
    await clients[2].close_and_wait(srv)
    assert value(await scrape(srv), "appliance_ws_connections") == 2
    for c in clients[:2]:
        await c.close()


# --- who may read it --------------------------------------------------------------------------


async def _get(srv: ServerHandle, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=10.0) as http:
        return await http.get("/metrics", headers=headers)


async def test_loopback_reads_without_a_token_by_default(srv: ServerHandle) -> None:
    r = await _get(srv)
    assert r.status_code == 200
    assert "appliance_rings_started" in r.text


async def test_outside_the_allow_list_only_the_metrics_token_opens_it(tmp_path) -> None:
    async with running_server(
        tmp_path, users=USERS, metrics={"allow_from": ["10.9.0.0/16"], "token": METRICS_TOKEN}
    ) as srv:
        refused = [
            await _get(srv),
            await _get(srv, Authorization=srv.server_token()),
            await _get(srv, Authorization=f"Bearer {srv.server_token()}"),
            await _get(srv, Authorization=f"Bearer {srv.user_token('alice')}"),
            await _get(srv, Authorization=f"Bearer {METRICS_TOKEN}x"),
            await _get(srv, Authorization=METRICS_TOKEN),
        ]
        for r in refused:
            assert r.status_code == 403, r.text
            assert r.json()["StatusCode"] == 403
            assert "appliance_" not in r.text
        r = await _get(srv, Authorization=f"Bearer {METRICS_TOKEN}")
        assert r.status_code == 200
        assert "appliance_ws_connections" in r.text


async def test_turned_off_is_404(tmp_path) -> None:
    async with running_server(tmp_path, users=USERS, metrics={"enabled": False}) as srv:
        r = await _get(srv)
        assert r.status_code == 404
        assert r.json()["StatusCode"] == 404


def test_bad_metrics_settings_name_the_key() -> None:
    with pytest.raises(ValidationError, match=r"metrics\.allow_from"):
        ServerSettings.model_validate({"metrics": {"allow_from": ["10.0.0.300/8"]}})
    with pytest.raises(ValidationError, match=r"metrics\.token"):
        ServerSettings.model_validate({"metrics": {"token": "short"}})


async def test_a_client_behind_a_local_proxy_is_judged_by_its_own_address(
    srv: ServerHandle,
) -> None:
    """What a proxy on this host passes in ``X-Forwarded-For`` is the address ``allow_from``
    checks (uvicorn believes it from loopback only)."""
    assert (await _get(srv, **{"X-Forwarded-For": "127.0.0.1"})).status_code == 200
    r = await _get(srv, **{"X-Forwarded-For": "203.0.113.9"})
    assert r.status_code == 403, r.text
