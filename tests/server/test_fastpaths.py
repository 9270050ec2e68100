"""The server's cheap paths keep their meaning: a remembered token signature, call types read
once per request, query answers built without the framework's encoder, WebSocket compression."""

from __future__ import annotations

import json

import pytest
import websockets

from tests.support.server import running_server


async def test_tampered_token_is_refused_after_the_real_one_was_remembered(tmp_path) -> None:
    async with running_server(tmp_path, users=["alice"]) as srv:
        token = srv.user_token("alice")
        async with srv.client(token=token) as http:
            assert (await http.get("/api/v2/video/calltypes")).status_code == 200
        head, body, sig = token.split(".")
        forged = f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
        async with srv.client(token=forged) as http:
            r = await http.get("/api/v2/video/calltypes")
        assert r.status_code == 401, r.text
        async with srv.client(token=token) as http:  # the real one still works
            assert (await http.get("/api/v2/video/calltypes")).status_code == 200


async def test_a_call_type_change_is_seen_by_the_next_request(tmp_path) -> None:
    async with running_server(tmp_path, users=["alice", "bob"]) as srv, srv.client() as http:
        create = {"data": {"created_by_id": "alice", "members": [{"user_id": "bob"}]}}
        r = await http.post("/api/v2/video/call/default/room-1", json=create)
        assert r.status_code == 200, r.text
        before = r.json()["call"]["settings"]["ring"]["incoming_call_timeout_ms"]
        r = await http.put(
            "/api/v2/video/calltypes/default",
            json={"settings": {"ring": {"incoming_call_timeout_ms": before + 1000}}},
        )
        assert r.status_code == 200, r.text
        r = await http.post("/api/v2/video/call/default/room-1", json={})
        assert r.json()["call"]["settings"]["ring"]["incoming_call_timeout_ms"] == before + 1000
        r = await http.get("/api/v2/video/call/default/room-1")
        assert r.json()["call"]["settings"]["ring"]["incoming_call_timeout_ms"] == before + 1000


async def test_query_members_answer_is_the_same_json(tmp_path) -> None:
    async with running_server(tmp_path, users=["alice", "bob"]) as srv, srv.client() as http:
        members = [{"user_id": "alice", "custom": {"floor": 2}}, {"user_id": "bob"}]
        body = {"data": {"created_by_id": "alice", "members": members}}
        assert (await http.post("/api/v2/video/call/default/q", json=body)).status_code == 200
        r = await http.post(
            "/api/v2/video/call/members",
            json={"type": "default", "id": "q", "sort": [{"field": "user_id", "direction": 1}]},
        )
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        out = r.json()
        assert [m["user_id"] for m in out["members"]] == ["alice", "bob"]
        assert out["members"][0]["custom"] == {"floor": 2}
        assert out["members"][0]["user"]["id"] == "alice"
        assert out["next"] is None and out["prev"] is None and out["duration"].endswith("ms")
        r = await http.post("/api/v2/video/call/members", json={"type": "default", "id": "nope"})
        assert r.status_code == 404, r.text


async def _extensions(srv) -> list[str]:
    async with websockets.connect(srv.ws_url) as ws:
        await ws.send(
            json.dumps({"token": srv.user_token("alice"), "user_details": {"id": "alice"}})
        )
        assert json.loads(await ws.recv())["type"] == "connection.ok"
        return [e.name for e in ws.protocol.extensions]


@pytest.mark.e2e
@pytest.mark.parametrize("compression", [None, True])
async def test_served_websockets_compress_only_when_configured(tmp_path, compression) -> None:
    settings = {} if compression is None else {"ws_compression": compression}
    async with running_server(tmp_path, users=["alice"], subprocess=True, **settings) as srv:
        names = await _extensions(srv)
    assert names == (["permessage-deflate"] if compression else [])
