"""The status LED (call state → pattern table) and the camera-live LED.

Blinking runs as a task on the loop with the injected clock rather than in gpiozero's blink
thread, so tests can step through a pattern with a manual clock.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from appliance.clock import Clock
from appliance.hardware.config import Pattern, SimpleLed
from appliance.hardware.config import StatusLed as StatusLedConfig

log = logging.getLogger(__name__)


class StatusLed:
    def __init__(
        self,
        cfg: StatusLedConfig | None,
        factory: Any,
        clock: Clock,
        table: dict[str, Pattern] | None = None,
    ) -> None:
        from appliance.hardware.config import DEFAULT_PATTERNS

        self._clock = clock
        self.table = table or (
            cfg.table() if cfg else {k: Pattern.parse(v) for k, v in DEFAULT_PATTERNS.items()}
        )
        self._led: Any = None
        if cfg is not None:
            from gpiozero import LED

            self._led = LED(
                cfg.pin, active_high=cfg.active_high, initial_value=False, pin_factory=factory
            )
        self.state = "off"
        self._task: asyncio.Task[None] | None = None

    @property
    def pin(self) -> Any:
        return self._led.pin if self._led is not None else None

    @property
    def is_lit(self) -> bool:
        return bool(self._led.is_lit) if self._led is not None else False

    @property
    def pattern(self) -> Pattern:
        return self.table.get(self.state, Pattern(on_s=0.0, off_s=math.inf))

    def show(self, state: str) -> None:
        if state == self.state:
            return
        old, self.state = self.state, state
        log.info("StatusLed %s -> %s (%s)", old, state, self.pattern)
        if self._task is not None:
            self._task.cancel()
            self._task = None
        pattern = self.pattern
        if pattern.on_s == 0:
            self._set(False)
        elif pattern.off_s == 0:
            self._set(True)
        else:
            self._set(True)
            self._task = asyncio.get_running_loop().create_task(self._blink(pattern))

    async def _blink(self, pattern: Pattern) -> None:
        while True:
            await self._clock.sleep(pattern.on_s)
            self._set(False)
            await self._clock.sleep(pattern.off_s)
            self._set(True)

    def _set(self, on: bool) -> None:
        if self._led is not None:
            self._led.value = on

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._led is not None:
            self._led.close()

    def __repr__(self) -> str:
        return f"<StatusLed {self.state} ({self.pattern})>"


class CameraLiveLed:
    """On whenever video may leave the device (set before the media gate opens)."""

    def __init__(self, cfg: SimpleLed | None, factory: Any) -> None:
        self._led: Any = None
        if cfg is not None:
            from gpiozero import LED

            self._led = LED(
                cfg.pin, active_high=cfg.active_high, initial_value=False, pin_factory=factory
            )
        self.on = False

    @property
    def pin(self) -> Any:
        return self._led.pin if self._led is not None else None

    def set(self, on: bool) -> None:
        if on == self.on:
            return
        self.on = on
        log.info("CameraLiveLed %s", "on" if on else "off")
        if self._led is not None:
            self._led.value = on

    def close(self) -> None:
        if self._led is not None:
            self._led.close()

    def __repr__(self) -> str:
        return f"<CameraLiveLed {'on' if self.on else 'off'}>"
