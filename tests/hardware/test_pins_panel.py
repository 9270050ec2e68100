from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from appliance.clock import SystemClock
from appliance.daemon.config import DeviceConfig
from appliance.errors import HardwareError
from appliance.hardware.buttons import ButtonEvent
from appliance.hardware.config import ButtonConfig, LedsConfig, RelayConfig
from appliance.hardware.panel import Panel
from appliance.hardware.pins import is_mock, make_pin_factory


def test_auto_falls_back_to_mock_with_a_warning(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("appliance.hardware.pins.glob.glob", lambda pattern: [])
    with caplog.at_level(logging.WARNING):
        factory = make_pin_factory("auto")
    assert is_mock(factory)
    assert "falling back to simulated pins" in caplog.text


def test_auto_with_a_gpiochip_but_no_lgpio_falls_back(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("appliance.hardware.pins.glob.glob", lambda pattern: ["/dev/gpiochip0"])
    with caplog.at_level(logging.WARNING):
        factory = make_pin_factory("auto")
    assert is_mock(factory) and "lgpio unavailable" in caplog.text


def test_an_explicit_factory_must_work() -> None:
    with pytest.raises(HardwareError, match="pin factory 'lgpio' cannot start"):
        make_pin_factory("lgpio")
    with pytest.raises(HardwareError, match="unknown pin factory"):
        make_pin_factory("banana")


CONFIG: dict[str, Any] = {
    "device": {"id": "door-1"},
    "server": "embedded",
    "call": {"members": ["alice"]},
    "buttons": [
        {
            "name": "call",
            "pin": 17,
            "press": "call",
            "hold": "hangup",
            "hold_time": 0.3,
            "cooldown": 0,
        },
        {"name": "privacy", "pin": 18, "press": "privacy", "pull_up": False},
    ],
    "leds": {"status": {"pin": 27}, "camera_live": {"pin": 22}},
    "relay": {"pin": 23, "pulse_ms": 100},
}


async def test_simulated_panel_press_hold_and_history() -> None:
    cfg = DeviceConfig.model_validate(CONFIG)
    factory = make_pin_factory("mock")
    events: list[ButtonEvent] = []
    panel = Panel(cfg, factory, SystemClock(), asyncio.get_running_loop(), events.append)
    try:
        await panel.press("call")
        await panel.press("privacy")
        await asyncio.sleep(0.05)
        assert [(e.button, e.kind) for e in events] == [("call", "press"), ("privacy", "press")]
        await panel.press("call", hold=True)
        await asyncio.sleep(0.05)
        assert events[-1].kind == "hold" and events[-1].action.value == "hangup"
        with pytest.raises(KeyError, match="no button 'nope'"):
            await panel.press("nope")
        panel.show("ringing")
        panel.show("in_call")
        panel.camera_live(True)
        assert panel.unlock("alice").ok
        panel.assert_shown("ringing", "in_call")
        with pytest.raises(AssertionError):
            panel.assert_shown("in_call", "ringing")
        snap = panel.snapshot()
        assert snap["leds"] == {"status": "in_call", "status_pattern": "on", "camera_live": True}
        assert snap["relay"]["pulses"] == 1 and snap["relay"]["last_pulse_by"] == "alice"
        assert panel.values("button") == ["call press", "privacy press", "call hold"]
        assert all(r.at > 0 for r in panel.history)
    finally:
        panel.close()
        factory.close()


@dataclass(frozen=True)
class OnlyPanelConfig:
    """A panel config made of the hardware's own models: the panel needs nothing of the daemon."""

    buttons: list[ButtonConfig]
    leds: LedsConfig
    relay: RelayConfig | None = None


async def test_a_press_before_bind_is_dropped_then_bound_presses_arrive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = OnlyPanelConfig(
        buttons=[ButtonConfig.model_validate({"name": "call", "pin": 17, "cooldown": 0})],
        leds=LedsConfig(),
    )
    factory = make_pin_factory("mock")
    events: list[ButtonEvent] = []
    panel = Panel(cfg, factory, SystemClock(), asyncio.get_running_loop())
    try:
        with caplog.at_level(logging.WARNING, logger="appliance.hardware.panel"):
            await panel.press("call")
            await asyncio.sleep(0.05)
        assert "call press before anything handles buttons" in caplog.text
        panel.bind(events.append)
        await panel.press("call")
        await asyncio.sleep(0.05)
        assert [(e.button, e.kind) for e in events] == [("call", "press")]
        assert panel.values("button") == ["call press", "call press"]
    finally:
        panel.close()
        factory.close()
