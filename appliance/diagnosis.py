"""What ``appliance doctor`` reports and what it reads from the machine.

A :class:`Check` is ``ok``, ``warn`` or ``fail``, one line of what was found and, when not ok,
one line of what to do. :class:`Probes` are everything the checks read from the machine (the
kernel's clock state, /proc, the GPIO chips, the daemon's pid), injected so that tests run the
checks against simulated devices and broken set-ups.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]
TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def kernel_clock_state() -> int:
    """adjtimex(2) with no changes: TIME_ERROR (5) while no NTP client has synchronised it."""
    buf = ctypes.create_string_buffer(512)  # struct timex; modes = 0 (read only)
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.adjtimex(buf))


@dataclass
class Probes:
    """Everything the checks read from the machine."""

    clock_state: Callable[[], int] = kernel_clock_state
    now: Callable[[], float] = time.time
    board_model: Callable[[], str] = lambda: read_text("/proc/device-tree/model")
    gpio_chips: Callable[[], list[str]] = lambda: sorted(
        str(p) for p in Path("/dev").glob("gpiochip*")
    )
    daemon_pid: Callable[[Path], int | None] = lambda sock: _peer_pid(sock)


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip("\0\n ")
    except OSError:
        return ""


def _peer_pid(sock_path: Path) -> int | None:
    """The running daemon's pid: the peer credentials of its control socket."""
    import socket
    import struct

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(sock_path))
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid: int = struct.unpack("3i", creds)[0]
    return pid
