"""The status LED's timed indications: a failure shows as ``error`` for
:data:`ERROR_SHOWN_S`; a missed call shows as ``missed`` for ``timings.missed_s`` or until the
next button action."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from appliance.clock import Clock

ERROR_SHOWN_S = 5.0

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class Indications:
    def __init__(
        self, clock: Clock, missed_s: float, refresh: Callable[[], None], spawn: Spawn
    ) -> None:
        self._clock = clock
        self._missed_s = missed_s
        self._refresh = refresh
        self._spawn = spawn
        self.error: str | None = None
        self.missed_at: float | None = None

    def failed(self, message: str) -> None:
        """Show ``message`` as the last error (the caller refreshes the LEDs)."""
        self.error = message
        self._spawn(self._clear_error())

    async def _clear_error(self) -> None:
        await self._clock.sleep(ERROR_SHOWN_S)
        self.error = None
        self._refresh()

    def missed(self) -> None:
        self.missed_at = at = self._clock.monotonic()
        self._spawn(self._clear_missed(at))

    def clear_missed(self) -> None:
        self.missed_at = None

    async def _clear_missed(self, at: float) -> None:
        await self._clock.sleep(self._missed_s)
        if self.missed_at == at:
            self.missed_at = None
            self._refresh()
