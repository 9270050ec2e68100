from __future__ import annotations

import logging
import socket
import struct
from pathlib import Path

from appliance.daemon.audit import audit
from appliance.journal import JournalHandler, encode


def test_encoding_plain_and_binary_values() -> None:
    assert encode({"MESSAGE": "hi", "ACTION": "unlock"}) == b"MESSAGE=hi\nACTION=unlock\n"
    assert encode({"MESSAGE": "a\nb"}) == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n"


def test_audit_records_reach_the_journal_with_fields(tmp_path: Path) -> None:
    path = str(tmp_path / "journal.sock")
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(path)
    journal.settimeout(5)
    handler = JournalHandler(path)
    logger = logging.getLogger("appliance.audit")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        audit("unlock", "default:door-1", "alice", "door unlocked")
        datagram = journal.recv(65536).decode()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
        handler.close()
        journal.close()
    lines = datagram.splitlines()
    assert "CALL_CID=default:door-1" in lines
    assert "USER=alice" in lines and "ACTION=unlock" in lines and "PRIORITY=6" in lines
    assert "MESSAGE=unlock default:door-1 by alice: door unlocked" in lines


def test_only_under_systemd() -> None:
    assert not JournalHandler.available({})
