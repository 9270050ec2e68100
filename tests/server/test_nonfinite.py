"""NaN and Infinity (Python's JSON reads and writes them; they are not JSON) are refused with a
400 naming the field wherever JSON comes in, and never go out: not in answers, not in frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import update

from appliance.server.store.schema import users
from tests.server.wsclient import WsClient, call_post, create_call
from tests.support.server import ServerHandle

CALL = "/api/v2/video/call/default/poison"
RAW = {"content-type": "application/json"}


def _strict(text: str) -> Any:
    """What a browser's JSON.parse accepts: no NaN, no Infinity."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} on the wire: {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def _field(r: Any) -> str:
    assert r.status_code == 400, r.text
    body = _strict(r.text)
    assert "NaN and Infinity are refused" in body["message"], body
    field: str = body["exception_fields"]["field"]
    return field


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
async def test_a_create_with_nan_is_refused_and_queries_stay_answerable(
    server: ServerHandle, constant: str
) -> None:
    body = '{"data": {"created_by_id": "alice", "custom": {"v": CONSTANT}}}'.replace(
        "CONSTANT", constant
    )
    async with server.client() as http:
        assert _field(await http.post(CALL, content=body, headers=RAW)) == "data.custom.v"
        # The symptom of a stored NaN: every query with a custom.* filter answered 500.
        r = await http.post("/api/v2/video/calls", json={"filter_conditions": {"custom.v": 1}})
        assert r.status_code == 200, r.text
    async with server.client("bob") as http:
        r = await http.post("/api/v2/video/calls", json={"filter_conditions": {"custom.v": 1}})
        assert r.status_code == 200, r.text


async def test_nan_is_refused_in_every_body_and_in_query_payloads(server: ServerHandle) -> None:
    await create_call(server, "default:poison", ["alice", "bob"])
    async with server.client("alice") as http:
        r = await http.post(
            "/api/v2/users",
            content='{"users": {"alice": {"id": "alice", "custom": {"score": [1, NaN]}}}}',
            headers=RAW,
        )
        assert _field(r) == "users.alice.custom.score[1]"
        r = await http.post(
            f"{CALL}/members",
            content='{"update_members": [{"user_id": "bob", "custom": {"x": Infinity}}]}',
            headers=RAW,
        )
        assert _field(r) == "update_members[0].custom.x"
        r = await http.patch(CALL, content='{"custom": {"t": -Infinity}}', headers=RAW)
        assert _field(r) == "custom.t"
        r = await http.post(f"{CALL}/event", content='{"custom": {"n": NaN}}', headers=RAW)
        assert _field(r) == "custom.n"
        payload = '{"filter_conditions": {"custom.score": {"$gt": NaN}}}'
        r = await http.get("/api/v2/users", params={"payload": payload})
        assert _field(r) == "payload.filter_conditions.custom.score.$gt"
        # A string that spells them is data like any other.
        r = await http.post(
            "/api/v2/users", json={"users": {"alice": {"id": "alice", "custom": {"s": "NaN"}}}}
        )
        assert r.status_code == 201 or r.status_code == 200, r.text


async def test_nan_in_a_websocket_frame_is_an_error_frame_naming_the_field(
    server: ServerHandle,
) -> None:
    async with await WsClient.open(server, "alice") as ws:
        await ws.ws.send(
            '{"type": "signal", "call_cid": "default:x", "to": "p",'
            ' "signal": {"kind": "candidate", "candidate": {"sdpMLineIndex": NaN}}}'
        )
        err = await ws.next("error")
        assert err["StatusCode"] == 400
        assert err["field"] == "signal.candidate.sdpMLineIndex", err
        await ws.send({"type": "health.check", "id": "still-here"})
        assert (await ws.next("health.check"))["reply_to"] == "still-here"


async def test_a_nan_stored_by_an_older_version_goes_out_as_null(server: ServerHandle) -> None:
    """One resident's NaN must not make the console (a strict parser) drop everyone's rings."""
    await create_call(server, "default:poison", ["alice", "bob"])
    async with server.ctx.store.begin() as db:
        await db.execute(
            update(users).where(users.c.id == "alice").values(custom={"v": float("nan")})
        )
    async with server.client("bob") as http:
        r = await http.get(CALL)
    assert r.status_code == 200, r.text
    assert _strict(r.text)["call"]["created_by"]["custom"] == {"v": None}
    bob = await WsClient.open(server, "bob")
    raw: list[str] = []
    assert (await call_post(server, "alice", "default:poison", "ring")).status_code == 200
    while True:
        text = str(await bob.ws.recv())
        raw.append(text)
        if '"call.ring"' in text:
            break
    ring = _strict(raw[-1])
    assert ring["user"]["id"] == "alice"
    await bob.close()


def test_frames_and_notifications_never_carry_nan() -> None:
    from appliance.server.realtime.connection import encode
    from appliance.server.wire import wirejson

    frame = {"type": "custom", "custom": {"v": float("nan"), "w": [float("-inf"), 1.5]}}
    assert _strict(encode(frame))["custom"] == {"v": None, "w": [None, 1.5]}
    assert _strict(wirejson.dumps(frame, ensure_ascii=True))["custom"]["v"] is None


def test_users_add_reads_nan_as_text_not_as_a_number() -> None:
    from appliance.server.cli import _custom

    assert _custom(["score=NaN", "top=Infinity", "n=2", "s=x"]) == {
        "score": "NaN",
        "top": "Infinity",
        "n": 2,
        "s": "x",
    }
