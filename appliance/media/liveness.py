"""When a peer's link is dead, and when to try again: a pure policy, fed with times and counts.

aioice notices a dead path only when its consent checks have failed for ~30 s. A connection that
received nothing at all (RTP, RTCP and STUN all count) for ``stall_timeout`` seconds is called
disconnected instead (5 s by default: a link that flaps for up to ~3 s at a time, Wi-Fi at the
edge of its range, comes back on the same path, and a restart would only cost a new handshake on
top of the outage); the pair's first offerer then restarts, and restarts again every
``restart_timeout`` seconds until a connection is up (the signaling may be down too meanwhile). An
attempt that hears from the other side (ICE checks, DTLS) is making progress on a slow path and gets
up to ``connect_timeout`` before it is replaced; one still waiting for its answer gets twice
``restart_timeout`` (an answer on its way through a server that just came back is worth waiting for).
"""

from __future__ import annotations

from enum import Enum


class Action(Enum):
    NONE = "none"
    DISCONNECTED = "disconnected"
    RESTART = "restart"


class LinkWatch:
    def __init__(
        self,
        *,
        stall_timeout: float = 5.0,
        restart_timeout: float = 2.0,
        connect_timeout: float = 15.0,
    ) -> None:
        self.stall_timeout = stall_timeout
        self.restart_timeout = restart_timeout
        self.connect_timeout = connect_timeout
        self.interval = min(0.5, stall_timeout / 4)
        self._count = -1
        self._changed: float | None = None
        self._attempt: float | None = None

    def tick(
        self, now: float, received: int, state: str, offerer: bool, answered: bool = True
    ) -> Action:
        """``received``: packets the current connection received so far; ``state``: the peer's
        state; ``answered``: the current offer has its answer."""
        if self._changed is None or self._attempt is None:
            self._changed = self._attempt = now
        if received != self._count:
            self._count, self._changed = received, now
        if state == "connected":
            self._attempt = now
            if now - self._changed > self.stall_timeout:
                return Action.DISCONNECTED
            return Action.NONE
        if not offerer:
            return Action.NONE
        waited = now - self._attempt
        # An attempt that received anything is progressing: it gets the longer connect_timeout.
        if received > 0:
            limit = self.connect_timeout
        else:
            limit = self.restart_timeout if answered else 2 * self.restart_timeout
        if state in ("disconnected", "failed") or (state == "connecting" and waited >= limit):
            self._attempt = now
            self._count, self._changed = -1, now
            return Action.RESTART
        return Action.NONE

    def __repr__(self) -> str:
        return f"LinkWatch(stall {self.stall_timeout:g}s, restart every {self.restart_timeout:g}s)"
