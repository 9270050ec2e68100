from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from appliance.clock import ManualClock
from appliance.sdnotify import Notifier


def listener(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    return sock, path


def test_ready_status_stopping_through_notify_socket(tmp_path: Path) -> None:
    sock, path = listener(tmp_path)
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    n.ready("idle, server online")
    n.status("in_call")
    n.stopping()
    got = [sock.recv(4096).decode() for _ in range(3)]
    assert got == ["READY=1\nSTATUS=idle, server online", "STATUS=in_call", "STOPPING=1"]
    n.close()
    sock.close()


def test_no_socket_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    n.ready()
    assert n.sent == ["READY=1"]


def test_watchdog_interval_and_pid(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "20000000"})
    assert n.watchdog_s == 20.0
    other = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"})
    assert other.watchdog_s is None


async def test_watchdog_pings_only_while_healthy(tmp_path: Path) -> None:
    sock, path = listener(tmp_path)
    sock.setblocking(False)
    n = Notifier(path, watchdog_usec=10_000_000)
    clock = ManualClock()
    healthy = [True]
    task = asyncio.ensure_future(n.run_watchdog(lambda: healthy[0], clock))

    async def step() -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        clock.advance(5)
        for _ in range(5):
            await asyncio.sleep(0)

    await step()
    await step()
    healthy[0] = False
    await step()
    await step()
    healthy[0] = True
    await step()
    task.cancel()
    pings = []
    while True:
        try:
            pings.append(sock.recv(100))
        except BlockingIOError:
            break
    # two healthy periods (+ the first ping at start), none while unhealthy, then one again
    assert pings == [b"WATCHDOG=1"] * 3 + [b"WATCHDOG=1"]
    sock.close()
