"""Keyframe requests: from the peer's RTCP (PLI/FIR) to the camera's encoder, rate-limited.

aiortc reacts to PLI/FIR only when it encodes itself (it sets a flag its own encoder reads). With
passthrough nothing reads that flag, so each sender is hooked (the hook lives in
:mod:`appliance.media.aiortc_compat`; tests/media/test_keyframes.py checks it with real RTCP). A
peer that cannot decode sends a PLI per frame, so requests are rate-limited: one goes through at
once, the others within ``min_interval`` collapse into one at the end of the interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from appliance.clock import Clock, SystemClock

logger = logging.getLogger(__name__)


class KeyframeLimiter:
    """Forwards keyframe requests to ``target`` at most once per ``min_interval`` seconds."""

    def __init__(
        self,
        target: Callable[[], None],
        *,
        min_interval: float = 0.5,
        clock: Clock | None = None,
        name: str = "video",
    ) -> None:
        self._target = target
        self.min_interval = min_interval
        self._clock: Clock = clock or SystemClock()
        self._name = name
        self._last: float | None = None
        self._trailing: asyncio.Task[None] | None = None
        self.requested = 0
        self.forwarded = 0
        self.reasons: dict[str, int] = {}

    def request(self, reason: str, *, urgent: bool = False) -> None:
        """``urgent``: a peer just connected and shows nothing until it gets a keyframe; that is
        rare (once per connection), so it is never deferred."""
        self.requested += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        now = self._clock.monotonic()
        if urgent or self._last is None or now - self._last >= self.min_interval:
            self._forward(now, reason)
            return
        if self._trailing is None or self._trailing.done():
            wait = self._last + self.min_interval - now
            self._trailing = asyncio.get_running_loop().create_task(self._later(wait, reason))

    async def _later(self, wait: float, reason: str) -> None:
        await self._clock.sleep(wait)
        self._forward(self._clock.monotonic(), f"{reason} (deferred)")

    def _forward(self, now: float, reason: str) -> None:
        self._last = now
        self.forwarded += 1
        logger.debug("KeyframeLimiter(%s) forwarding keyframe request: %s", self._name, reason)
        self._target()

    def close(self) -> None:
        if self._trailing is not None and not self._trailing.done():
            self._trailing.cancel()

    def __repr__(self) -> str:
        return (
            f"KeyframeLimiter({self._name}, every {self.min_interval:g}s, "
            f"{self.forwarded}/{self.requested} forwarded)"
        )
