"""The shared test server (``tests/support/server.py``) keeps its promises."""

from __future__ import annotations

import pytest

from appliance.clock import ManualClock
from appliance.errors import ConfigError
from tests.support.server import running_server


async def test_restart_keeps_port_and_database_and_clock(tmp_path) -> None:
    clock = ManualClock(1_750_000_000.0)
    async with running_server(tmp_path, users=["alice"], clock=clock) as srv:
        assert srv.ctx.clock is clock
        port, url = srv.port, srv.base_url
        async with srv.client() as http:
            r = await http.post(
                "/api/v2/video/call/default/x", json={"data": {"created_by_id": "alice"}}
            )
        assert r.json()["call"]["created_at"] == 1_750_000_000 * 10**9
        await srv.restart()
        assert (srv.port, srv.base_url) == (port, url)
        assert srv.db_path.is_file()
        async with srv.client("alice") as http:
            r = await http.get("/api/v2/video/call/default/x")
        assert r.status_code == 200 and r.json()["call"]["created_at"] == 1_750_000_000 * 10**9
    # stopped: the port is free again
    async with running_server(tmp_path / "again", port=port) as other:
        assert other.port == port


async def test_startup_mistakes_surface(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"call-types\.yaml:2"):
        async with running_server(tmp_path, call_types_yaml="call_types:\n  - nme: x\n"):
            pass
    with pytest.raises(ValueError, match="in-process only"):
        async with running_server(tmp_path, clock=ManualClock(), subprocess=True):
            pass
