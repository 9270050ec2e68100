"""A test ``NOTIFY_SOCKET``: what systemd would read from a ``Type=notify`` service."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path


class NotifyListener:
    """A test NOTIFY_SOCKET, drained by a thread as systemd would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def wait(self, predicate: object, seconds: float = 60) -> str:
        assert callable(predicate)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for m in list(self.messages):
                if predicate(m):
                    return m
            time.sleep(0.05)
        raise AssertionError(f"no matching sd_notify message in {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()
