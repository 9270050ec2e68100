"""User custom data is bounded like call data, and users inside events are cut to what a console
shows: one resident's large custom data once made a ring send megabytes to every member."""

from __future__ import annotations

import json
from typing import Any

from tests.server.wsclient import WsClient, call_post, create_call
from tests.support.server import ServerHandle

CID = "default:door-1"
NOTES = "n" * 4000  # under the 5120-byte limit, but not what a ring needs to carry


async def _upsert(srv: ServerHandle, user: str | None, uid: str, custom: dict[str, Any]) -> Any:
    async with srv.client(user) as http:
        return await http.post(
            "/api/v2/users", json={"users": {uid: {"id": uid, "custom": custom}}}
        )


async def test_user_custom_data_is_limited(server: ServerHandle) -> None:
    big = {"blob": "x" * 6000}
    for caller in ("alice", None):  # the user herself, and a server token
        r = await _upsert(server, caller, "alice", big)
        assert r.status_code == 400, r.text
        assert r.json()["exception_fields"]["field"] == "users.alice.custom"
        assert "over the limit of 5120" in r.json()["message"]
    async with server.client() as http:
        r = await http.post(
            "/api/v2/video/call/default/big",
            json={"data": {"created_by": {"id": "erin", "custom": big}}},
        )
    assert (
        r.status_code == 400 and r.json()["exception_fields"]["field"] == "data.created_by.custom"
    )
    assert (await _upsert(server, "alice", "alice", {"notes": NOTES})).status_code in (200, 201)


def _users_in(frame: dict[str, Any]) -> list[dict[str, Any]]:
    found = [frame["user"], frame["call"]["created_by"]]
    found += [m["user"] for m in frame["members"]]
    found += [p["user"] for p in (frame["call"]["session"] or {}).get("participants", [])]
    return found


async def test_users_in_events_carry_only_what_a_console_shows(server: ServerHandle) -> None:
    device = {"device": {"relay": True}, "location": "Main entrance", "notes": NOTES}
    for uid, custom in (("door-1", device), ("alice", {"notes": NOTES}), ("bob", {"notes": NOTES})):
        assert (await _upsert(server, None, uid, custom)).status_code in (200, 201)
    await create_call(server, CID, ["door-1", "alice", "bob"], by="door-1")
    alice = await WsClient.open(server, "alice")
    r = await call_post(server, "door-1", CID, "join", {"ring": True})
    assert r.status_code == 200, r.text
    raw = ""
    while '"call.ring"' not in raw:
        raw = str(await alice.ws.recv())
    ring = json.loads(raw)
    users = _users_in(ring)
    assert len(users) >= 5  # caller, creator, 3 members (and the joined door)
    for user in users:
        assert set(user) <= {"id", "name", "image", "role", "online", "custom"}, user
        assert "notes" not in user["custom"], user
    door = next(u for u in users if u["id"] == "door-1")
    assert door["custom"] == {"device": {"relay": True}, "location": "Main entrance"}
    # Five users with 4 kB of notes each would be over 20 kB.
    assert len(raw.encode()) < 12_000, len(raw.encode())
    # The REST answer still has the whole user.
    async with server.client("alice") as http:
        got = (await http.get("/api/v2/video/call/default/door-1")).json()
    assert got["call"]["created_by"]["custom"]["notes"] == NOTES
    await alice.close()
