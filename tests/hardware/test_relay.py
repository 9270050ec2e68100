from __future__ import annotations

from typing import Any

from appliance.clock import ManualClock
from appliance.hardware.config import RelayConfig
from appliance.hardware.relay import DoorRelay
from tests.hardware.conftest import settle


def relay(factory: Any, clock: ManualClock, **kw: Any) -> DoorRelay:
    return DoorRelay(RelayConfig(pin="GPIO23", **kw), factory, clock)


async def test_pulse_length_active_high(factory: Any, clock: ManualClock) -> None:
    r = relay(factory, clock, pulse_ms=1500)
    assert r.pin.state is False
    assert r.pulse("alice").ok
    await settle()
    assert r.pin.state is True
    clock.advance(1.25)
    await settle()
    assert r.pin.state is True
    clock.advance(0.25)
    await settle()
    assert r.pin.state is False
    assert [p.duration_s for p in r.pulses] == [1.5]


async def test_active_low_polarity(factory: Any, clock: ManualClock) -> None:
    r = relay(factory, clock, active_high=False, pulse_ms=250)
    assert r.pin.state is True  # released = high on an active-low board
    r.pulse()
    await settle()
    assert r.pin.state is False and r.active
    clock.advance(0.25)
    await settle()
    assert r.pin.state is True and not r.active


async def test_min_interval(factory: Any, clock: ManualClock) -> None:
    r = relay(factory, clock, pulse_ms=125, min_interval_s=5)
    assert r.pulse().ok
    await settle()
    clock.advance(1)
    await settle()
    result = r.pulse()
    assert (result.ok, result.reason) == (False, "rate_limited")
    clock.advance(4)
    await settle()
    assert r.pulse().ok
    assert len(r.pulses) == 2


async def test_relay_off_after_a_restart(factory: Any, clock: ManualClock) -> None:
    r = relay(factory, clock, pulse_ms=60_000)
    r.pulse()
    assert r.pin.state is True
    # the daemon dies mid-pulse: nothing releases the pin...
    factory.release_all(r._out)
    assert factory.pin("GPIO23").state is True
    # ...and the next daemon's relay starts released
    r2 = relay(factory, clock)
    assert r2.pin.state is False and not r2.active
    r2.close()


async def test_close_releases(factory: Any, clock: ManualClock) -> None:
    r = relay(factory, clock, pulse_ms=60_000)
    r.pulse()
    await settle()  # the pulse task is asleep when the daemon shuts down
    r.close()
    assert factory.pin("GPIO23").state is False
    # the cancelled pulse task then ends quietly: no write to the closed pin
    await settle()
    assert r._task is not None and r._task.done() and r._task.cancelled()
    assert "closed" in repr(r)
