"""Buttons, LEDs and the door relay behind gpiozero, with the pin factory chosen by config.

gpiozero is imported only in this package. Its callbacks run on its own threads; every hop to
the daemon's loop goes through ``loop.call_soon_threadsafe``.
"""

from appliance.hardware.buttons import ButtonEvent, PanelButton
from appliance.hardware.leds import CameraLiveLed, StatusLed
from appliance.hardware.panel import Panel
from appliance.hardware.pins import make_pin_factory
from appliance.hardware.relay import DoorRelay, UnlockResult

__all__ = [
    "ButtonEvent",
    "CameraLiveLed",
    "DoorRelay",
    "Panel",
    "PanelButton",
    "StatusLed",
    "UnlockResult",
    "make_pin_factory",
]
