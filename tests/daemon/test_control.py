from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest

from appliance.daemon.control import ControlError, ControlServer, request


async def test_status_and_press_round_trip(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def handle(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        if req["cmd"] == "press" and req["button"] not in ("call",):
            raise KeyError(f"no button {req['button']!r}")
        return {"ok": True, "status": {"call_state": "idle"}}

    server = ControlServer(tmp_path, handle)
    await server.start()
    try:
        assert stat.S_IMODE(server.token_path.stat().st_mode) == 0o600
        reply = await asyncio.to_thread(request, server.socket_path, {"cmd": "status"})
        assert reply["status"] == {"call_state": "idle"}
        await asyncio.to_thread(
            request, server.socket_path, {"cmd": "press", "button": "call", "hold": True}
        )
        assert seen[-1]["hold"] is True
        with pytest.raises(ControlError, match="no button 'nope'"):
            await asyncio.to_thread(request, server.socket_path, {"cmd": "press", "button": "nope"})
        # a wrong token is refused
        server.token_path.write_text("wrong\n")
        with pytest.raises(ControlError, match="wrong token"):
            await asyncio.to_thread(request, server.socket_path, {"cmd": "status"})
    finally:
        await server.close()
    assert not server.socket_path.exists()


def test_no_daemon_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no daemon running"):
        request(tmp_path / "control.sock", {"cmd": "status"})
