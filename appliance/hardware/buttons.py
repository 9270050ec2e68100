"""A push button: gpiozero ``Button`` (with its ``bounce_time``) plus our own timing rules.

gpiozero's mock pins do not simulate bounce, and long cables give phantom pulses that pass a
hardware debounce, so the rules that matter are ours and run on the loop with an injected
clock: a press shorter than ``min_press`` is ignored; a press within ``cooldown`` of the last
accepted one is ignored (a double press never places two calls); held for ``hold_time`` is a
hold, released earlier a press. gpiozero calls back on its own threads; those callbacks read the
clock at the edge and only ``call_soon_threadsafe`` into the loop, so a press is timed by its edges,
not by when a busy loop got to them (a 200 ms press while the loop was late is still 200 ms).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from appliance.clock import Clock
from appliance.hardware.config import Action, ButtonConfig

log = logging.getLogger(__name__)

Kind = Literal["press", "hold"]


@dataclass(frozen=True)
class ButtonEvent:
    button: str
    kind: Kind
    action: Action
    at: float


class PanelButton:
    """One configured button. ``on_event`` is called on the loop for each accepted press/hold."""

    def __init__(
        self,
        cfg: ButtonConfig,
        factory: Any,
        loop: asyncio.AbstractEventLoop,
        clock: Clock,
        on_event: Callable[[ButtonEvent], None],
    ) -> None:
        from gpiozero import Button

        self.cfg = cfg
        self._loop = loop
        self._clock = clock
        self._on_event = on_event
        self._down_at: float | None = None
        self._hold_fired = False
        self._hold_task: asyncio.Task[None] | None = None
        self._last_accepted: float | None = None
        self.history: list[tuple[float, str]] = []
        self._button = Button(
            cfg.pin, pull_up=cfg.pull_up, bounce_time=cfg.bounce_time, pin_factory=factory
        )
        self._button.when_pressed = lambda: loop.call_soon_threadsafe(
            self._pressed, clock.monotonic()
        )
        self._button.when_released = lambda: loop.call_soon_threadsafe(
            self._released, clock.monotonic()
        )

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def pin(self) -> Any:
        return self._button.pin

    def _pressed(self, at: float) -> None:
        """On the loop; ``at``: when the pin went down (read on gpiozero's thread)."""
        if self._down_at is not None:
            return
        self._down_at = at
        self._hold_fired = False
        self._hold_task = self._loop.create_task(self._hold_timer(at))

    async def _hold_timer(self, down_at: float) -> None:
        await self._clock.sleep(max(0.0, down_at + self.cfg.hold_time - self._clock.monotonic()))
        if self._down_at == down_at:
            self._hold_fired = True
            self._fire("hold")

    def _released(self, at: float) -> None:
        """On the loop; ``at``: when the pin came back up."""
        if self._down_at is None:
            return
        held = at - self._down_at
        self._down_at = None
        if self._hold_task is not None:
            self._hold_task.cancel()
            self._hold_task = None
        if self._hold_fired:
            return
        if held < self.cfg.min_press:
            self._record(f"ignored: press of {held:.3f}s is shorter than min_press")
            return
        self._fire("hold" if held >= self.cfg.hold_time else "press")

    def inject(self, kind: Kind) -> None:
        """A press that did not come from a pin (the control endpoint on real hardware)."""
        self._fire(kind)

    def _fire(self, kind: Kind) -> None:
        now = self._clock.monotonic()
        if self._last_accepted is not None and now - self._last_accepted < self.cfg.cooldown:
            self._record(f"ignored: {kind} within cooldown")
            return
        self._last_accepted = now
        action = self.cfg.press if kind == "press" else self.cfg.hold
        self._record(f"{kind} -> {action.value}")
        self._on_event(ButtonEvent(self.name, kind, action, now))

    def _record(self, what: str) -> None:
        self.history.append((self._clock.monotonic(), what))
        log.info("Button(%s) %s", self.name, what)

    def close(self) -> None:
        if self._hold_task is not None:
            self._hold_task.cancel()
        self._button.close()

    def __repr__(self) -> str:
        state = "down" if self._down_at is not None else "up"
        return f"<PanelButton {self.name} pin={self.cfg.pin} {state}>"
