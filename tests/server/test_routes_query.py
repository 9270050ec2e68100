"""Query members, query calls and query users over HTTP against a real server."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.server import ServerHandle, running_server

MEMBERS = "/api/v2/video/call/members"
CALLS = "/api/v2/video/calls"


async def _post(http: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post(path, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _create(srv: ServerHandle, cid: str, members: list[dict[str, Any]], **data: Any) -> None:
    ctype, cid_id = cid.split(":")
    async with srv.client() as http:
        body = {"data": {"created_by_id": "alice", "members": members, **data}}
        await _post(http, f"/api/v2/video/call/{ctype}/{cid_id}", body)


async def test_query_members_filters_sorts_and_pages(server: ServerHandle) -> None:
    members = [
        {"user_id": "alice", "role": "host", "custom": {"flat": 1, "shift": "day"}},
        {"user_id": "bob", "custom": {"flat": 2, "shift": "night"}},
        {"user_id": "carol", "custom": {"flat": 3, "shift": "night"}},
        {"user_id": "door-1", "custom": {"flat": 4}},
    ]
    await _create(server, "default:lobby", members)
    async with server.client() as http:
        out = await _post(
            http,
            MEMBERS,
            {
                "type": "default",
                "id": "lobby",
                "filter_conditions": {"custom.shift": "night"},
                "sort": [{"field": "user_id", "direction": -1}],
            },
        )
        assert [m["user_id"] for m in out["members"]] == ["carol", "bob"]
        assert out["members"][0]["custom"] == {"flat": 3, "shift": "night"}
        assert out["members"][0]["user"]["name"] == "Carol"
        assert out["next"] is None and out["prev"] is None
        assert out["duration"].endswith("ms")

        body: dict[str, Any] = {
            "type": "default",
            "id": "lobby",
            "filter_conditions": {"custom.flat": {"$gte": 2}},
            "sort": [{"field": "user_id", "direction": 1}],
            "limit": 2,
        }
        first = await _post(http, MEMBERS, body)
        assert [m["user_id"] for m in first["members"]] == ["bob", "carol"]
        assert first["next"] and first["prev"] is None
        second = await _post(http, MEMBERS, {**body, "next": first["next"]})
        assert [m["user_id"] for m in second["members"]] == ["door-1"]
        assert second["next"] is None and second["prev"]
        back = await _post(http, MEMBERS, {**body, "prev": second["prev"]})
        assert [m["user_id"] for m in back["members"]] == ["bob", "carol"]

        host = await _post(
            http, MEMBERS, {"type": "default", "id": "lobby", "filter_conditions": {"role": "host"}}
        )
        assert [m["user_id"] for m in host["members"]] == ["alice"]
        by_user = await _post(
            http,
            MEMBERS,
            {
                "type": "default",
                "id": "lobby",
                "filter_conditions": {"user.custom.device.relay": True},
            },
        )
        assert [m["user_id"] for m in by_user["members"]] == ["door-1"]


async def test_query_members_errors_name_the_field(server: ServerHandle) -> None:
    await _create(server, "default:lobby", [{"user_id": "alice"}])
    base = {"type": "default", "id": "lobby"}
    cases = [
        ({"filter_conditions": {"colour": "red"}}, "filter_conditions.colour"),
        ({"filter_conditions": {"role": {"$regex": "h"}}}, "filter_conditions.role.$regex"),
        (
            {"filter_conditions": {"$or": [{"role": "x"}, {"size": 1}]}},
            "filter_conditions.$or[1].size",
        ),
        ({"sort": [{"field": "colour", "direction": 1}]}, "sort[0].field"),
        ({"sort": [{"field": "user_id", "direction": 2}]}, "sort[0].direction"),
        ({"limit": 101}, "limit"),
        ({"next": "not-a-cursor!"}, "next"),
    ]
    async with server.client() as http:
        for extra, field in cases:
            r = await http.post(MEMBERS, json={**base, **extra})
            assert r.status_code == 400, (extra, r.text)
            body = r.json()
            assert body["StatusCode"] == 400
            assert field in body["message"], (field, body["message"])
        r = await http.post(MEMBERS, json={"type": "default", "id": "nope"})
        assert r.status_code == 404
        # A missing call is a 404 before what else is wrong with the request (a server token
        # looks the call up only when its page is empty or the request is refused).
        missing = [
            {"next": "not-a-cursor!"},
            {"next": "e30", "prev": "e30"},
            {"filter_conditions": {"custom.flat": 1}},  # a rare value: the probe runs first
            {"filter_conditions": {"role": "call_member"}, "limit": 1},
        ]
        for extra in missing:
            r = await http.post(MEMBERS, json={"type": "default", "id": "nope", **extra})
            assert r.status_code == 404, (extra, r.text)
            assert r.json()["StatusCode"] == 404
        # A call that exists but has no such member: an empty page, not a 404.
        empty = await _post(http, MEMBERS, {**base, "filter_conditions": {"role": "nobody"}})
        assert empty["members"] == [] and empty["next"] is None and empty["prev"] is None


async def test_query_members_needs_read_access(tmp_path: Any) -> None:
    users = ["alice", "bob", {"id": "eve", "teams": ["red"]}]
    async with running_server(tmp_path, users=users) as srv:
        await _create(srv, "default:lobby", [{"user_id": "alice"}, {"user_id": "bob"}])
        async with srv.client("bob") as http:
            out = await _post(http, MEMBERS, {"type": "default", "id": "lobby"})
            assert {m["user_id"] for m in out["members"]} == {"alice", "bob"}
        async with srv.client("eve") as http:
            r = await http.post(MEMBERS, json={"type": "default", "id": "lobby"})
            assert r.status_code == 404, r.text


async def test_query_calls_filters_and_visibility(tmp_path: Any) -> None:
    users = ["alice", "bob", "carol", {"id": "rita", "teams": ["red"]}]
    async with running_server(tmp_path, users=users) as srv:
        await _create(srv, "default:a", [{"user_id": "alice"}, {"user_id": "bob"}], custom={"n": 1})
        await _create(srv, "default:b", [{"user_id": "carol"}], custom={"n": 2, "site": "x"})
        await _create(srv, "default:c", [{"user_id": "rita"}], team="red", custom={"n": 3})
        async with srv.client() as http:
            everything = await _post(http, CALLS, {"sort": [{"field": "cid", "direction": 1}]})
            assert [c["call"]["cid"] for c in everything["calls"]] == [
                "default:a",
                "default:b",
                "default:c",
            ]
            mine = await _post(http, CALLS, {"filter_conditions": {"members": {"$in": ["bob"]}}})
            assert [c["call"]["cid"] for c in mine["calls"]] == ["default:a"]
            assert {m["user_id"] for m in mine["calls"][0]["members"]} == {"alice", "bob"}
            custom = await _post(
                http, CALLS, {"filter_conditions": {"custom.n": {"$gte": 2}, "team": None}}
            )
            assert [c["call"]["cid"] for c in custom["calls"]] == ["default:b"]
            open_calls = await _post(
                http,
                CALLS,
                {"filter_conditions": {"ended_at": {"$exists": False}, "ongoing": False}},
            )
            assert len(open_calls["calls"]) == 3
            paged = await _post(http, CALLS, {"limit": 2})
            assert len(paged["calls"]) == 2 and paged["next"]
            rest = await _post(http, CALLS, {"limit": 2, "next": paged["next"]})
            assert len(rest["calls"]) == 1 and rest["prev"]
            r = await http.post(CALLS, json={"filter_conditions": {"colour": 1}})
            assert r.status_code == 400 and "filter_conditions.colour" in r.json()["message"]
        async with srv.client("rita") as http:
            seen = await _post(http, CALLS, {})
            assert [c["call"]["cid"] for c in seen["calls"]] == ["default:c"]
            assert seen["calls"][0]["membership"]["user_id"] == "rita"
            assert "read-call" in seen["calls"][0]["own_capabilities"]
        async with srv.client("bob") as http:
            seen = await _post(http, CALLS, {"sort": [{"field": "cid", "direction": 1}]})
            assert [c["call"]["cid"] for c in seen["calls"]] == ["default:a", "default:b"]
        pinned = srv.user_token("bob", call_cids=["default:b"])
        async with srv.client(token=pinned) as http:
            seen = await _post(http, CALLS, {})
            assert [c["call"]["cid"] for c in seen["calls"]] == ["default:b"]


async def test_query_users(tmp_path: Any) -> None:
    users = [
        {"id": "alice", "name": "Alice", "custom": {"flat": 1}},
        {"id": "bob", "name": "Bob", "role": "admin", "custom": {"flat": 2}},
        {"id": "door-1", "custom": {"device": {"relay": True, "model": "pi4"}}},
        {"id": "rita", "teams": ["red", "blue"]},
        {"id": "ron", "teams": ["red"]},
    ]
    async with running_server(tmp_path, users=users) as srv:

        async def query(http: httpx.AsyncClient, payload: Any) -> httpx.Response:
            return await http.get("/api/v2/users", params={"payload": json.dumps(payload)})

        async with srv.client() as http:
            r = await query(http, {"filter_conditions": {"custom.device": {"$exists": True}}})
            assert r.status_code == 200, r.text
            assert [u["id"] for u in r.json()["users"]] == ["door-1"]
            assert r.json()["users"][0]["custom"]["device"]["model"] == "pi4"
            r = await query(http, {"filter_conditions": {"teams": {"$in": ["blue"]}}})
            assert [u["id"] for u in r.json()["users"]] == ["rita"]
            r = await query(
                http,
                {
                    "filter_conditions": {"role": {"$ne": "admin"}, "custom.flat": {"$lte": 2}},
                    "sort": [{"field": "name", "direction": -1}],
                },
            )
            assert [u["id"] for u in r.json()["users"]] == ["alice"]
            r = await query(http, {"filter_conditions": {}, "limit": 2, "offset": 1})
            assert [u["id"] for u in r.json()["users"]] == ["bob", "door-1"]
            r = await query(http, {"filter_conditions": {"online": True}})
            assert r.status_code == 200 and r.json()["users"] == []
            r = await query(http, {"filter_conditions": {"online": False}, "id_gt": "q"})
            assert [u["id"] for u in r.json()["users"]] == ["rita", "ron"]
            for bad, field in [
                ({"filter_conditions": {"colour": 1}}, "filter_conditions.colour"),
                ({"filter_conditions": {"online": "yes"}}, "filter_conditions.online.$eq"),
                ({"offset": -1}, "payload.offset"),
            ]:
                r = await query(http, bad)
                assert r.status_code == 400 and field in r.json()["message"], r.text
            r = await http.get("/api/v2/users", params={"payload": "{not json"})
            assert r.status_code == 400 and "payload" in r.json()["message"]
        async with srv.client("ron") as http:
            r = await query(http, {"filter_conditions": {}})
            assert [u["id"] for u in r.json()["users"]] == ["rita", "ron"]
        async with srv.client("alice") as http:
            r = await query(http, {"filter_conditions": {}})
            assert [u["id"] for u in r.json()["users"]] == ["alice", "bob", "door-1"]
