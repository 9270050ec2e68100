"""The one seam to GPIO: a gpiozero pin factory chosen by config.

``auto`` picks lgpio (the only factory that works on a Pi 5) when it imports and a
``/dev/gpiochip*`` exists, and falls back to gpiozero's mock factory with a warning elsewhere,
so a laptop runs the same daemon with simulated pins. A factory named explicitly must work.
"""

from __future__ import annotations

import glob
import logging
from typing import Any

from appliance.errors import HardwareError

log = logging.getLogger(__name__)

_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}


def make_pin_factory(name: str) -> Any:
    """Return a gpiozero ``Factory`` for ``name`` (auto | mock | lgpio | rpigpio | pigpio | native)."""
    if name == "mock":
        return mock_factory()
    if name == "auto":
        if not glob.glob("/dev/gpiochip*"):
            log.warning("pins: no /dev/gpiochip* on this machine; falling back to simulated pins")
            return mock_factory()
        try:
            return _real_factory("lgpio")
        except HardwareError as err:
            log.warning("pins: lgpio unavailable (%s); falling back to simulated pins", err)
            return mock_factory()
    if name not in _FACTORIES:
        raise HardwareError(f"unknown pin factory {name!r}")
    return _real_factory(name)


def mock_factory() -> Any:
    from gpiozero.pins.mock import MockFactory

    return MockFactory()


def is_mock(factory: Any) -> bool:
    from gpiozero.pins.mock import MockFactory

    return isinstance(factory, MockFactory)


def _real_factory(name: str) -> Any:
    module_name, class_name = _FACTORIES[name]
    try:
        import importlib

        module = importlib.import_module(module_name)
        factory = getattr(module, class_name)()
    except Exception as err:  # ImportError, or the library failing to open the chip
        raise HardwareError(f"pin factory {name!r} cannot start: {err}") from err
    log.info("pins: using %s", class_name)
    return factory


def pins_in_use(factory: Any, pins: list[str], chip: str) -> dict[str, str]:
    """Which of ``pins`` someone else holds: gpiozero's reservations (mock pins), or the
    kernel's line info on ``chip`` (lgpio), without claiming or driving any of them (a relay
    pin briefly made an input could energise an active-low relay)."""
    used: dict[str, str] = {}
    if is_mock(factory):
        from gpiozero import GPIODevice
        from gpiozero.exc import GPIOPinInUse

        for pin in pins:
            try:
                GPIODevice(pin, pin_factory=factory).close()  # reserves, sets no function
            except GPIOPinInUse as err:
                used[pin] = str(err)
        return used
    try:
        import lgpio
    except ImportError as err:
        raise HardwareError(f"lgpio is not installed: {err}") from err
    handle = lgpio.gpiochip_open(int(chip.removeprefix("/dev/gpiochip")))
    try:
        for pin in pins:
            if not pin.upper().startswith("GPIO"):
                continue
            _status, _offset, flags, _name, user = lgpio.gpio_get_line_info(handle, int(pin[4:]))
            if flags & 1:  # GPIO_V2_LINE_FLAG_USED / lgpio's LG_KERNEL_USED
                used[pin] = f"in use by {user or 'the kernel'}"
    finally:
        lgpio.gpiochip_close(handle)
    return used
