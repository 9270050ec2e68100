"""The device panel: every button, LED and the relay built from config on one pin factory.

It is also the simulated panel: on gpiozero's ``MockFactory`` a press drives the real mock pin
(so the whole gpiozero → thread → loop path runs), and everything the panel shows is recorded
with a timestamp for ``appliance status`` and for tests' assert helpers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.clock import Clock
from appliance.errors import HardwareError
from appliance.hardware.buttons import ButtonEvent, PanelButton
from appliance.hardware.config import ButtonConfig, LedsConfig, RelayConfig
from appliance.hardware.leds import CameraLiveLed, StatusLed
from appliance.hardware.pins import is_mock
from appliance.hardware.relay import DoorRelay, UnlockResult

log = logging.getLogger(__name__)

ButtonHandler = Callable[[ButtonEvent], None]


class PanelConfig(Protocol):
    """The part of a device config the panel reads (the daemon's ``DeviceConfig`` has it)."""

    @property
    def buttons(self) -> Sequence[ButtonConfig]: ...

    @property
    def leds(self) -> LedsConfig: ...

    @property
    def relay(self) -> RelayConfig | None: ...


@dataclass(frozen=True)
class Record:
    at: float
    what: str
    value: Any


class Panel:
    def __init__(
        self,
        cfg: PanelConfig,
        factory: Any,
        clock: Clock,
        loop: asyncio.AbstractEventLoop,
        on_button: ButtonHandler | None = None,
    ) -> None:
        """``on_button`` may be bound later with :meth:`bind` (the daemon that handles the
        buttons is built after its panel); a press before that is logged and dropped."""
        self._clock = clock
        self.factory = factory
        self.simulated = is_mock(factory)
        self.history: list[Record] = []
        self._on_button = on_button
        try:
            self.relay = DoorRelay(cfg.relay, factory, clock) if cfg.relay else None
            self.status_led = StatusLed(cfg.leds.status, factory, clock)
            self.camera_led = CameraLiveLed(cfg.leds.camera_live, factory)
            self.buttons = {
                b.name: PanelButton(b, factory, loop, clock, self._button_event)
                for b in cfg.buttons
            }
        except HardwareError:
            raise
        except Exception as err:  # gpiozero: pin in use, invalid pin, no permission
            raise HardwareError(f"cannot set up the panel's pins: {err}") from err

    def bind(self, on_button: ButtonHandler) -> None:
        """Send button events to ``on_button`` from now on."""
        self._on_button = on_button

    def _button_event(self, event: ButtonEvent) -> None:
        self._record("button", f"{event.button} {event.kind}")
        if self._on_button is None:
            log.warning("Panel: %s %s before anything handles buttons", event.button, event.kind)
            return
        self._on_button(event)

    def _record(self, what: str, value: Any) -> None:
        self.history.append(Record(self._clock.time(), what, value))

    # outputs ---------------------------------------------------------------------------------

    def show(self, state: str) -> None:
        if state != self.status_led.state:
            self.status_led.show(state)
            self._record("status_led", state)

    def camera_live(self, on: bool) -> None:
        if on != self.camera_led.on:
            self.camera_led.set(on)
            self._record("camera_live", on)

    def unlock(self, by: str | None) -> UnlockResult:
        if self.relay is None:
            return UnlockResult(False, "no_relay")
        result = self.relay.pulse(by)
        self._record("relay", result.reason)
        return result

    # the simulated side ----------------------------------------------------------------------

    async def press(self, name: str, *, hold: bool = False) -> None:
        """Press a button as a finger would: on mock pins drive the pin for long enough to count
        as a press (or a hold); on real pins inject the press into the button's logic."""
        button = self.buttons.get(name)
        if button is None:
            known = ", ".join(self.buttons) or "none"
            raise KeyError(f"no button {name!r} (buttons: {known})")
        if not self.simulated:
            button.inject("hold" if hold else "press")
            return
        cfg = button.cfg
        duration = cfg.hold_time + 0.05 if hold else max(cfg.min_press * 2, cfg.min_press + 0.02)
        pin = button.pin
        (pin.drive_low if cfg.pull_up else pin.drive_high)()
        await self._clock.sleep(duration)
        (pin.drive_high if cfg.pull_up else pin.drive_low)()
        await asyncio.sleep(0)

    # reading it back -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        relay = self.relay
        return {
            "simulated": self.simulated,
            "leds": {
                "status": self.status_led.state,
                "status_pattern": str(self.status_led.pattern),
                "camera_live": self.camera_led.on,
            },
            "relay": None
            if relay is None
            else {
                "active": relay.active,
                "pulses": len(relay.pulses),
                "last_pulse_at": relay.pulses[-1].at if relay.pulses else None,
                "last_pulse_by": relay.pulses[-1].by if relay.pulses else None,
            },
            "buttons": sorted(self.buttons),
        }

    def values(self, what: str) -> list[Any]:
        return [r.value for r in self.history if r.what == what]

    def assert_shown(self, *states: str) -> None:
        """The status LED went through ``states`` in this order (other states may interleave)."""
        seen = iter(self.values("status_led"))
        for state in states:
            if not any(s == state for s in seen):
                raise AssertionError(
                    f"status LED never showed {state!r} in order; saw {self.values('status_led')}"
                )

    def close(self) -> None:
        for button in self.buttons.values():
            button.close()
        self.status_led.close()
        self.camera_led.close()
        if self.relay is not None:
            self.relay.close()

    def __repr__(self) -> str:
        return f"<Panel {'simulated' if self.simulated else 'gpio'} led={self.status_led.state}>"
