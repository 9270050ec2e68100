from __future__ import annotations

from typing import Any

import pytest

from appliance.clock import ManualClock
from appliance.hardware.config import DEFAULT_PATTERNS, LED_STATES, SimpleLed
from appliance.hardware.config import StatusLed as StatusLedConfig
from appliance.hardware.leds import CameraLiveLed, StatusLed
from tests.hardware.conftest import settle


def status(factory: Any, clock: ManualClock, **kw: Any) -> StatusLed:
    return StatusLed(StatusLedConfig(pin="GPIO27", **kw), factory, clock)


@pytest.mark.parametrize("state", LED_STATES)
async def test_every_state_has_a_pattern_and_drives_the_pin(
    factory: Any, clock: ManualClock, state: str
) -> None:
    led = status(factory, clock)
    led.show(state)
    await settle()
    pattern = DEFAULT_PATTERNS[state]
    if pattern == "off":
        assert led.pin.state is False
    elif pattern == "on":
        assert led.pin.state is True
    else:
        on_s = float(pattern.split()[1])
        off_s = float(pattern.split()[2])
        assert led.pin.state is True
        clock.advance(on_s)
        await settle()
        assert led.pin.state is False
        clock.advance(off_s)
        await settle()
        assert led.pin.state is True
    led.close()


async def test_pattern_override_and_active_low(factory: Any, clock: ManualClock) -> None:
    led = status(factory, clock, active_high=False, patterns={"idle": "on", "ringing": "blink 1 3"})
    led.show("idle")
    assert led.pin.state is False  # active-low: lit means the pin is low
    led.show("ringing")
    await settle()
    assert led.is_lit
    clock.advance(1)
    await settle()
    assert not led.is_lit
    clock.advance(2.9)
    await settle()
    assert not led.is_lit
    clock.advance(0.1)
    await settle()
    assert led.is_lit
    led.show("idle")
    clock.advance(10)
    await settle()
    assert led.is_lit  # the blink task stopped with the change of state


async def test_camera_live_led(factory: Any) -> None:
    led = CameraLiveLed(SimpleLed(pin="GPIO22"), factory)
    assert led.pin.state is False
    led.set(True)
    assert led.pin.state is True and led.on
    led.set(False)
    assert led.pin.state is False


async def test_camera_live_without_a_pin_still_tracks_state(factory: Any) -> None:
    led = CameraLiveLed(None, factory)
    led.set(True)
    assert led.on
