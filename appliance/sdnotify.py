"""systemd's notify protocol without a dependency: datagrams to ``$NOTIFY_SOCKET``.

``READY=1`` once the daemon is connected, ``STATUS=`` lines for ``systemctl status``,
``WATCHDOG=1`` from a task that only pings while the daemon reports itself healthy (a hung
loop or a wedged state machine stops the pings and systemd restarts the unit), ``STOPPING=1``
on the way out. Outside systemd (no socket) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping

from appliance.clock import Clock

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_s = watchdog_usec / 1_000_000 if watchdog_usec else None
        self.sent: list[str] = []
        self._sock: socket.socket | None = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # a datagram socket blocks when the reader's queue is full: never stall the loop
            self._sock.setblocking(False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET`` / ``WATCHDOG_USEC`` / ``WATCHDOG_PID`` (called by the CLI only)."""
        env = os.environ if env is None else env
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if pid and pid.isdigit() and int(pid) != os.getpid():
            usec = None
        return cls(env.get("NOTIFY_SOCKET") or None, int(usec) if usec and usec.isdigit() else None)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *lines: str) -> bool:
        message = "\n".join(lines)
        self.sent.append(message)
        if self._sock is None or self.address is None:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        try:
            self._sock.sendto(message.encode(), addr)
        except BlockingIOError:
            log.warning("sd_notify to %s: queue full, %r dropped", self.address, message)
            return False
        except OSError as err:
            log.warning("sd_notify to %s failed: %s", self.address, err)
            return False
        return True

    def ready(self, status: str | None = None) -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    async def run_watchdog(
        self, healthy: Callable[[], bool], clock: Clock, period_s: float | None = None
    ) -> None:
        """Ping at half the watchdog interval, but only while ``healthy()`` says so."""
        period = period_s if period_s is not None else (self.watchdog_s or 0) / 2
        if period <= 0:
            return
        was_healthy = True
        while True:
            ok = healthy()
            if ok:
                self.watchdog()
            elif was_healthy:
                log.error("watchdog: daemon unhealthy, withholding WATCHDOG=1")
            was_healthy = ok
            await clock.sleep(period)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __repr__(self) -> str:
        return f"<Notifier {self.address or 'disabled'}>"
