"""Who has arrived in the current call's session. The caller joins once the person who
accepted is in the session (they join right after accepting): two participants joining at the
same instant would both see the other and both offer."""

from __future__ import annotations

import asyncio

from appliance.clock import Clock


class Arrivals:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._arrived: set[str] = set()
        self._event = asyncio.Event()

    def add(self, user_id: str) -> None:
        self._arrived.add(user_id)
        self._event.set()

    def clear(self) -> None:
        self._arrived.clear()

    async def wait_for(self, user_id: str | None, timeout_s: float) -> None:
        """Return once ``user_id`` arrived, or after ``timeout_s`` (on the injected clock)."""
        deadline = self._clock.monotonic() + timeout_s
        while user_id not in self._arrived and self._clock.monotonic() < deadline:
            self._event.clear()
            waker = asyncio.ensure_future(self._event.wait())
            sleeper = asyncio.ensure_future(self._clock.sleep(deadline - self._clock.monotonic()))
            try:
                await asyncio.wait({waker, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
                sleeper.cancel()
