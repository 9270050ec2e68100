"""Audit records to journald with their fields, without a dependency.

Under systemd the daemon's stderr already reaches the journal, but as plain text; the audit
trail of a care room wants ``CALL_CID=``, ``USER=`` and ``ACTION=`` as journal fields
(``journalctl -u appliance ACTION=unlock``). This handler speaks journald's native protocol:
one datagram per record to ``/run/systemd/journal/socket``, ``KEY=value`` lines (values with a
newline in the length-prefixed binary form).
"""

from __future__ import annotations

import logging
import os
import socket
import struct

JOURNAL_SOCKET = "/run/systemd/journal/socket"
FIELDS = ("call_cid", "user", "action")
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def encode(fields: dict[str, str]) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    def __init__(self, address: str | None = None, identifier: str = "appliance") -> None:
        super().__init__()
        self.address = address or JOURNAL_SOCKET
        self.identifier = identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @classmethod
    def available(cls, env: dict[str, str] | None = None) -> bool:
        """Running under systemd with a journal (``JOURNAL_STREAM`` is set by systemd)."""
        environ = os.environ if env is None else env
        return bool(environ.get("JOURNAL_STREAM")) and os.path.exists(JOURNAL_SOCKET)

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        fields = {
            "MESSAGE": self.format(record),
            "PRIORITY": str(_PRIORITY.get(record.levelno, 6)),
            "SYSLOG_IDENTIFIER": self.identifier,
            "LOGGER": record.name,
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                fields[name.upper()] = str(value)
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sock.sendto(encode(self.fields(record)), self.address)
        except OSError:
            self.handleError(record)

    def close(self) -> None:
        self._sock.close()
        super().close()
