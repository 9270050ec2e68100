"""Call types: built-ins, the YAML file (with file:line errors), and CRUD over the API."""

from __future__ import annotations

import pytest

from appliance.errors import ConfigError
from appliance.server.app import create_app
from appliance.server.settings import ServerSettings
from tests.support.server import ServerHandle, running_server

YAML = """\
call_types:
  - name: intercom
    settings:
      ring: {auto_cancel_timeout_ms: 15000}
    grants:
      user: [read-call]
"""


async def test_builtins_listed(server: ServerHandle) -> None:
    async with server.client("alice") as http:
        r = await http.get("/api/v2/video/calltypes")
    assert r.status_code == 200
    types = r.json()["call_types"]
    assert set(types) >= {"default", "audio_room", "livestream", "development"}
    assert types["audio_room"]["settings"]["video"]["enabled"] is False
    # anyone signed in may watch a livestream (appliance/calls/types.py), but not go backstage
    assert "join-call" in types["livestream"]["grants"]["user"]
    assert "join-backstage" not in types["livestream"]["grants"]["user"]
    assert "join-call" in types["default"]["grants"]["call_member"]


async def test_yaml_call_types(tmp_path) -> None:
    async with running_server(tmp_path, users=["alice"], call_types_yaml=YAML) as srv:
        async with srv.client() as http:
            r = await http.get("/api/v2/video/calltypes/intercom")
    body = r.json()
    assert body["settings"]["ring"]["auto_cancel_timeout_ms"] == 15000
    assert body["settings"]["ring"]["incoming_call_timeout_ms"] == 30000
    assert body["grants"]["user"] == ["read-call"]
    assert "join-call" in body["grants"]["call_member"]  # other roles keep the default grants


def test_yaml_mistakes_name_file_and_line(tmp_path) -> None:
    bad = tmp_path / "call-types.yaml"
    bad.write_text(YAML.replace("      user: [read-call]", "      user: [read-call, fly]"))
    with pytest.raises(ConfigError) as err:
        create_app(ServerSettings(state_dir=tmp_path, call_types=bad, api_secret="s"))
    assert "call-types.yaml:6" in str(err.value) and "fly" in str(err.value)
    bad.write_text(YAML.replace("auto_cancel_timeout_ms", "auto_cancel"))
    with pytest.raises(ConfigError) as err:
        create_app(ServerSettings(state_dir=tmp_path, call_types=bad, api_secret="s"))
    assert "call-types.yaml:4" in str(err.value) and "auto_cancel" in str(err.value)


async def test_crud(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.post(
            "/api/v2/video/calltypes",
            json={
                "name": "bedside",
                "settings": {"limits": {"max_duration_seconds": 3600}},
                "grants": {"user": ["read-call"]},
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["settings"]["limits"]["max_duration_seconds"] == 3600
        assert (
            await http.post("/api/v2/video/calltypes", json={"name": "bedside"})
        ).status_code == 409
        r = await http.put(
            "/api/v2/video/calltypes/bedside",
            json={"settings": {"ring": {"incoming_call_timeout_ms": 9000}}},
        )
        body = r.json()
        assert body["settings"]["ring"]["incoming_call_timeout_ms"] == 9000
        assert body["settings"]["limits"]["max_duration_seconds"] == 3600
        r = await http.put(
            "/api/v2/video/calltypes/bedside", json={"grants": {"user": ["teleport"]}}
        )
        assert r.status_code == 400 and "teleport" in r.json()["message"]
        await http.post(
            "/api/v2/video/call/bedside/room-1", json={"data": {"created_by_id": "alice"}}
        )
        assert (await http.delete("/api/v2/video/calltypes/bedside")).status_code == 409
        await http.post("/api/v2/video/call/bedside/room-1/delete", json={})
        assert (await http.delete("/api/v2/video/calltypes/bedside")).status_code == 200
        assert (await http.get("/api/v2/video/calltypes/bedside")).status_code == 404
    async with server.client("alice") as http:
        r = await http.post("/api/v2/video/calltypes", json={"name": "mine"})
        assert r.status_code == 403
