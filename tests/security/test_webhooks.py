"""Webhooks and /metrics as an attacker would try them: a receiver that redirects elsewhere is not
followed (no request reaches a host outside the allow-list), and what /metrics shows names no
call, user or token."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance.server.lifecycle.services import services
from tests.security.principals import USERS
from tests.server.wsclient import call_post, create_call
from tests.support.pushservice import until
from tests.support.server import running_server
from tests.support.webhookreceiver import WebhookReceiver


async def test_a_redirect_is_not_followed_to_a_host_outside_the_allow_list(tmp_path: Path) -> None:
    async with WebhookReceiver() as allowed, WebhookReceiver() as elsewhere:
        allowed.location = elsewhere.url
        hooks = {
            "allowed_hosts": [allowed.origin],
            "hooks": [{"url": allowed.url, "events": ["call.ring"]}],
            "retry_first_seconds": 0.02,
        }
        async with running_server(tmp_path, users=USERS, webhooks=hooks) as srv:
            await create_call(srv, "default:sec-hook", ["alice", "bob"])
            allowed.script(307)
            r = await call_post(srv, "alice", "default:sec-hook", "ring", {"members_ids": ["bob"]})
            assert r.status_code == 200, r.text
            sender = services(srv.ctx).webhooks
            await until(lambda: sender.counts()["failed"] == 1)
            await sender.idle()
            # the setup does reach the allowed receiver: the next ring is delivered there
            r = await call_post(srv, "alice", "default:sec-hook", "ring", {"members_ids": ["bob"]})
            assert r.status_code == 200, r.text
            await allowed.wait_for(lambda d: d.event["type"] == "call.ring")
        assert [d.status for d in allowed.attempts] == [307, 200]
        assert elsewhere.attempts == []


async def test_metrics_name_no_call_user_or_token(tmp_path: Path) -> None:
    async with running_server(tmp_path, users=USERS) as srv:
        cid = "default:private-room-9"
        await create_call(srv, cid, ["alice", "bob"])
        r = await call_post(srv, "alice", cid, "ring", {"members_ids": ["bob"]})
        assert r.status_code == 200, r.text
        token = srv.user_token("alice")
        async with srv.client("bob") as http:
            await http.post("/api/v2/video/call/default/private-room-9/accept")
            await http.get("/api/v2/video/call/default/private-room-9", params={"token": token})
            text = (await http.get("/metrics")).text
        assert "appliance_rings_answered_total" in text
        for secret in ("private-room-9", "alice", "bob", token, srv.api_secret, srv.api_key):
            assert secret not in text


async def test_logs_never_show_a_receiver_url_or_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The CLI run in-process by other tests quiets httpx to WARNING; this test needs its lines.
    caplog.set_level(logging.DEBUG, logger="httpx")
    async with WebhookReceiver() as receiver:
        url = receiver.url + "?key=hook-credential-77"
        hooks = {
            "allowed_hosts": [receiver.origin],
            "hooks": [{"url": url, "events": ["call.ring"]}],
            "retry_first_seconds": 0.02,
        }
        async with running_server(tmp_path, users=USERS, webhooks=hooks) as srv:
            await create_call(srv, "default:sec-log", ["alice", "bob"])
            receiver.script(500, 400)
            r = await call_post(srv, "alice", "default:sec-log", "ring", {"members_ids": ["bob"]})
            assert r.status_code == 200, r.text
            sender = services(srv.ctx).webhooks
            await until(lambda: sender.counts()["failed"] == 1)
    assert [d.status for d in receiver.attempts] == [500, 400]
    assert any("HTTP Request" in rec.getMessage() for rec in caplog.records), "httpx logged"
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    for secret in ("hook-credential-77", receiver.path, srv.api_secret):
        assert secret not in logged
