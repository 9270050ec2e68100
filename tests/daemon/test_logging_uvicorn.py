"""Audit records still reach journald after a call server started in the process.

uvicorn's default ``log_config`` runs ``logging.config.dictConfig``, which closes every handler
already made, the journal handler on ``appliance.audit`` too: each audit record then died with
EBADF inside logging. Both the embedded server and ``appliance serve`` leave logging to the CLI.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import journal
from appliance.cli import configure_logging
from appliance.clock import SystemClock
from appliance.daemon.audit import audit
from appliance.daemon.config import load_config
from appliance.daemon.embedded import EmbeddedServer

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture
def fake_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for /run/systemd/journal/socket, and systemd's
    JOURNAL_STREAM, so that the CLI's logging set-up attaches the journal handler."""
    path = tmp_path / "journal.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setattr(journal, "JOURNAL_SOCKET", str(path))
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    audit_log = logging.getLogger("appliance.audit")
    level, propagate = audit_log.level, audit_log.propagate
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    httpx_level = logging.getLogger("httpx").level
    configure_logging("INFO")
    audit_log.setLevel(logging.INFO)  # pytest owns the root logger: basicConfig leaves its level
    handlers = [h for h in audit_log.handlers if isinstance(h, journal.JournalHandler)]
    assert handlers, "configure_logging attached no journal handler"
    try:
        yield sock
    finally:
        for handler in handlers:
            audit_log.removeHandler(handler)
            handler.close()
        audit_log.setLevel(level)
        audit_log.propagate = propagate
        for handler in root.handlers[:]:
            if handler not in root_handlers:
                root.removeHandler(handler)
        root.setLevel(root_level)
        logging.getLogger("httpx").setLevel(httpx_level)
        sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(65536).decode().splitlines()


async def test_audit_survives_the_embedded_server(
    tmp_path: Path, fake_journal: socket.socket
) -> None:
    audit("ring", "default:before", "entrance", "before the server")
    assert "CALL_CID=default:before" in received(fake_journal)
    device = tmp_path / "device.yaml"
    device.write_text((CONFIG / "intercom.yaml").read_text().replace("port: 3040", "port: 0"))
    (tmp_path / "call-types.yaml").write_text((CONFIG / "call-types.yaml").read_text())
    cfg = load_config(device, state_dir=tmp_path / "state")
    server = EmbeddedServer(cfg, SystemClock())
    await server.start()
    try:
        audit("ring", "default:door-entrance", "entrance", "rang alice")
        lines = received(fake_journal)
    finally:
        await server.stop()
    assert "CALL_CID=default:door-entrance" in lines
    assert "USER=entrance" in lines and "ACTION=ring" in lines


def test_audit_survives_appliance_serve_config(tmp_path: Path, fake_journal: socket.socket) -> None:
    from appliance.server.app import create_app
    from appliance.server.cli import uvicorn_config
    from appliance.server.settings import ServerSettings

    settings = ServerSettings(state_dir=tmp_path, api_secret="s", port=0)
    config = uvicorn_config(create_app(settings), settings)
    config.load()  # what uvicorn.Server.serve() does first: configure_logging() runs here
    audit("unlock", "default:door-1", "alice", "door unlocked")
    lines = received(fake_journal)
    assert "CALL_CID=default:door-1" in lines and "ACTION=unlock" in lines
