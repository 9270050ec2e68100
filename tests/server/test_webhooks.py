"""Webhooks: every event of a call type POSTed to its receivers, signed as Stream signs them
(checked with Stream's own SDK), retried on 5xx, not on 4xx, only to allowed hosts, never in
the way of the WebSockets, and once across replicas sharing PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from getstream.webhook import verify_webhook_signature
from pydantic import ValidationError

from appliance.errors import ConfigError
from appliance.server.lifecycle.services import services
from appliance.server.outbound.webhooks import WebhookSender
from appliance.server.settings import ServerSettings, WebhookHook, load_settings
from tests.server.wsclient import QUIET, WsClient, call_post, create_call
from tests.support.metrics import samples as parse
from tests.support.metrics import value
from tests.support.pgcluster import PostgresCluster
from tests.support.pushservice import until
from tests.support.server import ServerHandle, running_server
from tests.support.webhookreceiver import Delivery, WebhookReceiver

USERS = ["alice", "bob", "carol"]
CID = "default:nurse-1"


def _hooks(receiver: WebhookReceiver, **hook: Any) -> dict[str, Any]:
    return {
        "allowed_hosts": [receiver.origin],
        "hooks": [{"url": receiver.url, **hook}],
        "retry_first_seconds": 0.02,
    }


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as r:
        yield r


def _sender(srv: ServerHandle) -> WebhookSender:
    found = services(srv.ctx).webhooks
    assert isinstance(found, WebhookSender)
    return found


def _of(kind: str, cid: str = CID) -> Callable[[Delivery], bool]:
    return lambda d: d.event["type"] == kind and d.event.get("call_cid") == cid


async def _ring(srv: ServerHandle, cid: str = CID) -> None:
    r = await call_post(srv, "alice", cid, "ring", {"members_ids": ["bob"]})
    assert r.status_code == 200, r.text


async def test_events_are_signed_as_stream_signs_them(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with running_server(tmp_path, users=USERS, webhooks=_hooks(receiver)) as srv:
        await create_call(srv, CID, USERS)
        await _ring(srv)
        r = await call_post(srv, "bob", CID, "accept")
        assert r.status_code == 200, r.text
        (accepted,) = await receiver.wait_for(_of("call.accepted"))
        (ring,) = await receiver.wait_for(_of("call.ring"))
        for d in (ring, accepted):
            assert verify_webhook_signature(d.body, d.headers["x-signature"], srv.api_secret)
            assert not verify_webhook_signature(d.body, d.headers["x-signature"], "other-secret")
            assert not verify_webhook_signature(
                d.body.replace(b"bob", b"bub"), d.headers["x-signature"], srv.api_secret
            )
            assert d.headers["x-api-key"] == srv.api_key
            assert d.headers["content-type"] == "application/json"
            assert d.headers["x-webhook-attempt"] == "1"
        assert ring.event["user"]["id"] == "alice"
        assert ring.event["call"]["cid"] == CID
        assert accepted.event["user"]["id"] == "bob"
        ids = [d.headers["x-webhook-id"] for d in receiver.attempts]
        assert len(ids) == len(set(ids)), "one delivery id per event"
        kinds = [d.event["type"] for d in receiver.delivered]
        assert kinds.index("call.ring") < kinds.index("call.accepted"), "in order"
        assert srv.api_secret.encode() not in b"".join(d.body for d in receiver.attempts)


async def test_5xx_and_429_are_retried_until_it_succeeds_and_4xx_is_not(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    hooks = _hooks(receiver, events=["call.ring", "call.rejected"])
    async with running_server(tmp_path, users=USERS, webhooks=hooks) as srv:
        await create_call(srv, CID, USERS)
        receiver.script(500, 429)
        await _ring(srv)
        (ring,) = await receiver.wait_for(_of("call.ring"))
        tries = [d for d in receiver.attempts if d.body == ring.body]
        assert [d.status for d in tries] == [500, 429, 200]
        assert [d.headers["x-webhook-attempt"] for d in tries] == ["1", "2", "3"]
        assert len({d.headers["x-webhook-id"] for d in tries}) == 1
        await _sender(srv).idle()
        assert _sender(srv).counts()["retried"] == 2

        receiver.script(400)
        r = await call_post(srv, "bob", CID, "reject", {"reason": "decline"})
        assert r.status_code == 200, r.text
        await until(lambda: _sender(srv).counts()["failed"] == 1)
        assert [d.status for d in receiver.attempts if _of("call.rejected")(d)] == [400]
        # The receiver's lane goes on with the next event.
        await _ring(srv)
        await receiver.wait_for(_of("call.ring"), count=2)
        assert [d.status for d in receiver.attempts if _of("call.rejected")(d)] == [400]
        await _sender(srv).idle()
        counts = _sender(srv).counts()
        assert counts["failed"] == 1
        assert counts["sent"] == 2
        assert {d.event["type"] for d in receiver.attempts} == {"call.ring", "call.rejected"}


async def test_only_the_configured_call_types_are_sent(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with WebhookReceiver("/other") as other:
        hooks = _hooks(receiver, call_types=["default"], events=["call.ring"])
        hooks["allowed_hosts"].append(other.origin)
        hooks["hooks"].append({"url": other.url, "call_types": ["audio_room"]})
        async with running_server(tmp_path, users=USERS, webhooks=hooks) as srv:
            await create_call(srv, CID, USERS)
            await create_call(srv, "audio_room:hall", USERS)
            await _ring(srv)
            await _ring(srv, "audio_room:hall")
            await receiver.wait_for(_of("call.ring"))
            await other.wait_for(_of("call.ring", "audio_room:hall"))
            await _sender(srv).idle()
        assert {d.event["call_cid"] for d in receiver.attempts} == {CID}
        assert {d.event["type"] for d in receiver.attempts} == {"call.ring"}
        assert {d.event["call_cid"] for d in other.attempts} == {"audio_room:hall"}


async def test_a_hanging_receiver_does_not_hold_up_the_websockets(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with running_server(
        tmp_path,
        users=USERS,
        webhooks=_hooks(receiver, events=["call.ring"]),
        ws_health_seconds=QUIET,
    ) as srv:
        await create_call(srv, CID, USERS)
        bob = await WsClient.open(srv, "bob")
        receiver.hold()
        await _ring(srv)
        await until(lambda: receiver.holding == 1)
        await bob.next("call.ring")  # while the webhook POST is still unanswered
        assert receiver.attempts == []
        receiver.release()
        await receiver.wait_for(_of("call.ring"))
        await bob.close()


def test_a_url_outside_the_allow_list_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"hooks\[1\]\.url.*not in webhooks\.allowed_hosts"):
        ServerSettings.model_validate(
            {
                "webhooks": {
                    "allowed_hosts": ["hooks.example.org"],
                    "hooks": [
                        {"url": "https://hooks.example.org/a"},
                        {"url": "https://169.254.169.254/latest/meta-data"},
                    ],
                }
            }
        )
    for url in ("http://hooks.example.org/a", "https://hooks.example.org:8443/a"):
        with pytest.raises(ValidationError, match="allowed_hosts"):
            ServerSettings.model_validate(
                {"webhooks": {"allowed_hosts": ["hooks.example.org"], "hooks": [{"url": url}]}}
            )
    with pytest.raises(ValidationError, match="user:password"):
        ServerSettings.model_validate(
            {
                "webhooks": {
                    "allowed_hosts": ["hooks.example.org"],
                    "hooks": [{"url": "https://u:p@hooks.example.org/a"}],
                }
            }
        )


def test_the_config_error_names_the_yaml_key(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(
        "api_key: k\nwebhooks:\n  allowed_hosts: [hooks.example.org]\n"
        "  hooks:\n    - url: https://elsewhere.example.com/x\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    text = str(caught.value)
    assert "webhooks.hooks" in text
    assert "server.yaml" in text


# --- two replicas on PostgreSQL -------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.e2e
async def test_two_replicas_deliver_each_event_once(
    tmp_path: Path, postgres: PostgresCluster, receiver: WebhookReceiver
) -> None:
    url = postgres.create_database("w" + uuid.uuid4().hex[:10])
    common: dict[str, Any] = {
        "users": USERS,
        "database": url,
        "api_secret": "fleet-secret-of-at-least-32-bytes-long",
        "ws_health_seconds": QUIET,
        "webhooks": _hooks(receiver),
    }
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(running_server(tmp_path / "a", **common))
        b = await stack.enter_async_context(running_server(tmp_path / "b", **common))
        await create_call(a, CID, USERS)
        bob_on_b = await WsClient.open(b, "bob")
        await _ring(a)
        await bob_on_b.next("call.ring")  # the ring crossed to the other replica
        r = await call_post(b, "bob", CID, "accept")
        assert r.status_code == 200, r.text
        await receiver.wait_for(_of("call.accepted"))
        for replica in (a, b):
            await _sender(replica).idle()
        kinds = [d.event["type"] for d in receiver.attempts]
        assert kinds.count("call.ring") == 1
        assert kinds.count("call.accepted") == 1
        assert all(d.status == 200 for d in receiver.attempts)
        sent = _sender(a).counts()["sent"] + _sender(b).counts()["sent"]
        assert sent == len(receiver.attempts)

        # The same delivery handed to both replicas: the claim lets one of them post it.
        before = len(receiver.attempts)
        event = {"type": "call.custom", "call_cid": CID, "custom": {"n": 1}, "created_at": 1}
        _sender(a).submit(dict(event))
        _sender(b).submit(dict(event))
        for replica in (a, b):
            await _sender(replica).idle()
        assert len(receiver.attempts) == before + 1
        assert _sender(a).counts()["skipped"] + _sender(b).counts()["skipped"] == 1

        # NOTIFY lag between the replicas is in /metrics.
        async with httpx.AsyncClient(base_url=b.base_url) as http:
            samples = parse((await http.get("/metrics")).text)
        assert value(samples, "appliance_notify_lag_seconds_count") >= 1
        assert value(samples, "appliance_replicas_heard") == 2
        assert value(samples, "appliance_db_pool_size", dialect="postgresql") >= 1
        await bob_on_b.close()


def test_the_event_filter_and_the_readme_example() -> None:
    hook = WebhookHook(
        url="https://h.example.org/x",
        call_types=["default"],
        events=["call.session_*", "call.ring"],
    )
    assert hook.wants("default", "call.session_started")
    assert hook.wants("default", "call.ring")
    assert not hook.wants("default", "call.rejected")
    assert not hook.wants("default", "call.ringing")
    assert not hook.wants("audio_room", "call.ring")
    assert WebhookHook(url="https://h.example.org/x").wants("any", "anything")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Webhooks", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    settings = ServerSettings.model_validate(yaml.safe_load(block.group(1)))
    assert settings.webhooks.hooks[0].wants("default", "call.session_ended")
