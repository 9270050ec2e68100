"""Users: upsert, partial update, self-update with a user token, token revocation."""

from __future__ import annotations

from appliance.clock import ManualClock
from tests.support.server import ServerHandle, running_server


async def test_upsert_creates_and_updates(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.post(
            "/api/v2/users",
            json={
                "users": {
                    "dave": {
                        "id": "dave",
                        "name": "Dave",
                        "role": "admin",
                        "teams": ["blue"],
                        "custom": {"flat": 7, "device": {"relay": True}},
                    }
                }
            },
        )
        assert r.status_code == 200, r.text
        dave = r.json()["users"]["dave"]
        assert (dave["name"], dave["role"], dave["teams"]) == ("Dave", "admin", ["blue"])
        assert dave["custom"] == {"flat": 7, "device": {"relay": True}}
        created = dave["created_at"]
        r = await http.post("/api/v2/users", json={"users": {"dave": {"id": "dave", "name": "D."}}})
        dave = r.json()["users"]["dave"]
        assert dave["name"] == "D." and dave["role"] == "admin" and dave["custom"]["flat"] == 7
        assert dave["created_at"] == created and dave["updated_at"] >= created


async def test_key_must_match_id_and_role_must_be_known(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.post("/api/v2/users", json={"users": {"x": {"id": "y"}}})
        assert r.status_code == 400 and r.json()["exception_fields"]["field"] == "users.x.id"
        r = await http.post("/api/v2/users", json={"users": {"x": {"id": "x", "role": "king"}}})
        assert r.status_code == 400 and "king" in r.json()["message"]


async def test_user_token_updates_only_itself(server: ServerHandle) -> None:
    async with server.client("bob") as http:
        r = await http.post(
            "/api/v2/users", json={"users": {"bob": {"id": "bob", "name": "Bobby"}}}
        )
        assert r.status_code == 200 and r.json()["users"]["bob"]["name"] == "Bobby"
        r = await http.post(
            "/api/v2/users", json={"users": {"alice": {"id": "alice", "name": "x"}}}
        )
        assert r.status_code == 403
        r = await http.post(
            "/api/v2/users", json={"users": {"bob": {"id": "bob", "role": "admin"}}}
        )
        assert r.status_code == 403


async def test_revoke_tokens(tmp_path) -> None:
    clock = ManualClock()
    async with running_server(tmp_path, users=["alice", "bob"], clock=clock) as srv:
        old = srv.user_token("alice")
        async with srv.client(token=old) as http:
            assert (await http.get("/api/v2/video/calltypes")).status_code == 200
        clock.advance(10)
        async with srv.client() as admin:
            r = await admin.post("/api/v2/users/revoke_tokens", json={"user_ids": ["alice"]})
            assert r.status_code == 200, r.text
        async with srv.client(token=old) as http:
            r = await http.get("/api/v2/video/calltypes")
            assert r.status_code == 401 and "revoked" in r.json()["message"]
        clock.advance(10)
        async with srv.client("alice") as http:  # a new token works
            assert (await http.get("/api/v2/video/calltypes")).status_code == 200
        async with srv.client("bob") as http:  # bob is not affected, but may not revoke
            r = await http.post("/api/v2/users/revoke_tokens", json={"user_ids": ["alice"]})
            assert r.status_code == 403
