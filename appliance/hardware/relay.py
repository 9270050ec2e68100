"""The door relay: off at boot (and so after every crash and restart), polarity and pulse length
from config, at most one pulse per ``min_interval_s``."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from appliance.clock import Clock
from appliance.hardware.config import RelayConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnlockResult:
    ok: bool
    reason: str


@dataclass(frozen=True)
class Pulse:
    at: float
    duration_s: float
    by: str | None


class DoorRelay:
    def __init__(self, cfg: RelayConfig, factory: Any, clock: Clock) -> None:
        from gpiozero import OutputDevice

        self.cfg = cfg
        self._clock = clock
        # initial_value=False drives the inactive level right away: a relay left energised by
        # a crashed daemon is released the moment the next one starts.
        self._out = OutputDevice(
            cfg.pin, active_high=cfg.active_high, initial_value=False, pin_factory=factory
        )
        self.pulses: list[Pulse] = []
        self._last: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pin(self) -> Any:
        return self._out.pin

    @property
    def active(self) -> bool:
        return bool(self._out.value)

    def pulse(self, by: str | None = None) -> UnlockResult:
        """Start a pulse unless one ran within ``min_interval_s``; returns at once."""
        now = self._clock.monotonic()
        if self._task is not None and not self._task.done():
            return UnlockResult(False, "busy")
        if self._last is not None and now - self._last < self.cfg.min_interval_s:
            wait = self.cfg.min_interval_s - (now - self._last)
            log.info(
                "DoorRelay(%s) pulse by %s refused: rate limited (%.1fs left)",
                self.cfg.pin,
                by,
                wait,
            )
            return UnlockResult(False, "rate_limited")
        self._last = now
        duration = self.cfg.pulse_ms / 1000
        self.pulses.append(Pulse(self._clock.time(), duration, by))
        self._out.on()
        log.info("DoorRelay(%s) on for %.3fs (by %s)", self.cfg.pin, duration, by)
        self._task = asyncio.get_running_loop().create_task(self._release(duration))
        return UnlockResult(True, "unlocked")

    async def _release(self, duration: float) -> None:
        try:
            await self._clock.sleep(duration)
        finally:
            # close() cancels this task and releases the pin itself; a closed pin takes no writes
            if not self._out.closed:
                self._out.off()
                log.info("DoorRelay(%s) off", self.cfg.pin)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._out.off()
        self._out.close()

    def __repr__(self) -> str:
        state = "closed" if self._out.closed else "on" if self.active else "off"
        return f"<DoorRelay {self.cfg.pin} {state} pulses={len(self.pulses)}>"
