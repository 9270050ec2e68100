from __future__ import annotations

import asyncio
from typing import Any

from appliance.clock import ManualClock
from appliance.hardware.buttons import ButtonEvent, PanelButton
from appliance.hardware.config import Action, ButtonConfig
from tests.hardware.conftest import settle


def make(factory: Any, clock: ManualClock, **kw: Any) -> tuple[PanelButton, list[ButtonEvent]]:
    cfg = ButtonConfig(
        name="call",
        pin="GPIO17",
        press=Action.CALL,
        hold=Action.HANGUP,
        min_press=0.05,
        cooldown=2.0,
        hold_time=1.5,
        **kw,
    )
    events: list[ButtonEvent] = []
    return PanelButton(cfg, factory, asyncio.get_running_loop(), clock, events.append), events


async def tap(button: PanelButton, clock: ManualClock, seconds: float) -> None:
    button.pin.drive_low()
    await settle()
    clock.advance(seconds)
    await settle()
    button.pin.drive_high()
    await settle()


async def test_press_shorter_than_min_press_does_nothing(factory: Any, clock: ManualClock) -> None:
    button, events = make(factory, clock)
    await tap(button, clock, 0.02)
    assert events == []
    assert "shorter than min_press" in button.history[-1][1]


async def test_press_counts_once_long_enough(factory: Any, clock: ManualClock) -> None:
    button, events = make(factory, clock)
    await tap(button, clock, 0.2)
    assert [(e.kind, e.action) for e in events] == [("press", Action.CALL)]


async def test_two_presses_within_cooldown_are_one(factory: Any, clock: ManualClock) -> None:
    button, events = make(factory, clock)
    await tap(button, clock, 0.2)
    clock.advance(0.5)
    await tap(button, clock, 0.2)
    assert len(events) == 1
    clock.advance(2.0)
    await tap(button, clock, 0.2)
    assert len(events) == 2


async def test_hold_fires_while_held_and_release_adds_nothing(
    factory: Any, clock: ManualClock
) -> None:
    button, events = make(factory, clock)
    button.pin.drive_low()
    await settle()
    clock.advance(1.0)
    await settle()
    assert events == []
    clock.advance(0.6)
    await settle()
    assert [(e.kind, e.action) for e in events] == [("hold", Action.HANGUP)]
    button.pin.drive_high()
    await settle()
    assert len(events) == 1


async def test_active_high_button(factory: Any, clock: ManualClock) -> None:
    button, events = make(factory, clock, pull_up=False)
    button.pin.drive_high()
    await settle()
    clock.advance(0.1)
    button.pin.drive_low()
    await settle()
    assert [e.kind for e in events] == ["press"]


async def test_callback_from_another_thread_reaches_the_loop(
    factory: Any, clock: ManualClock
) -> None:
    button, events = make(factory, clock)
    await asyncio.to_thread(button.pin.drive_low)
    await settle()
    clock.advance(0.3)
    await asyncio.to_thread(button.pin.drive_high)
    await settle()
    assert [e.kind for e in events] == ["press"]


async def test_injected_press_respects_cooldown(factory: Any, clock: ManualClock) -> None:
    button, events = make(factory, clock)
    button.inject("press")
    button.inject("press")
    assert len(events) == 1


async def test_a_press_is_timed_by_its_edges_not_by_when_the_loop_got_to_them(
    factory: Any, clock: ManualClock
) -> None:
    """The loop was busy while the finger was down (a daemon just online: resync, the call's
    get-or-create, an in-process server answering). Both edges' callbacks run late, one right
    after the other; the press still lasted as long as the pin was down, and it counts. Timed
    when the loop ran the callbacks, it measured ~0 s and was dropped as shorter than min_press:
    a CALL that did nothing (tests/daemon/test_e2e_daemons.py logged it once under load)."""
    button, events = make(factory, clock)
    button.pin.drive_low()  # the edge; its callback waits for the busy loop
    clock.advance(0.2)  # the finger stays down 200 ms, the loop still busy
    button.pin.drive_high()
    await settle()  # now the loop runs both callbacks
    assert [(e.kind, e.action) for e in events] == [("press", Action.CALL)]
    assert "shorter than min_press" not in " ".join(what for _, what in button.history)


async def test_a_short_press_stays_short_when_the_loop_is_late(
    factory: Any, clock: ManualClock
) -> None:
    """The same late loop does not stretch a bounce into a press."""
    button, events = make(factory, clock)
    button.pin.drive_low()
    clock.advance(0.01)
    button.pin.drive_high()
    clock.advance(0.5)  # the loop gets to both callbacks only now
    await settle()
    assert events == []
    assert "shorter than min_press" in button.history[-1][1]
