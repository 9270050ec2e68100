"""The device panel's config: buttons (and what they do), the status LED's pattern table, the
camera-live LED and the door relay. Part of the device YAML (:mod:`appliance.daemon.config` embeds these models); the hardware
imports nothing of the daemon."""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PIN_RE = re.compile(r"^(GPIO\d{1,2}|BOARD\d{1,2}|\d{1,2}|[A-Z][A-Z0-9_]*:\d+)$")


class Action(StrEnum):
    """What a button press or hold does. ``toggle`` is the one-button intercom: call when
    idle, answer when ringing, hang up otherwise."""

    CALL = "call"
    ANSWER = "answer"
    REJECT = "reject"
    HANGUP = "hangup"
    TOGGLE = "toggle"
    PRIVACY = "privacy"
    JOIN = "join"
    NONE = "none"


LED_STATES = (
    "idle",
    "calling",
    "ringing",
    "connecting",
    "in_call",
    "muted",
    "missed",
    "offline",
    "error",
)


class Pattern(Model):
    """An LED pattern: ``off``, ``on`` or ``blink ON_S OFF_S`` in the YAML."""

    on_s: float
    off_s: float

    @classmethod
    def parse(cls, text: str) -> Pattern:
        words = str(text).split()
        if words == ["off"]:
            return cls(on_s=0.0, off_s=math.inf)
        if words == ["on"]:
            return cls(on_s=math.inf, off_s=0.0)
        if len(words) == 3 and words[0] == "blink":
            try:
                on_s, off_s = float(words[1]), float(words[2])
            except ValueError:
                on_s = off_s = -1.0
            if on_s > 0 and off_s > 0:
                return cls(on_s=on_s, off_s=off_s)
        raise ValueError(f"{text!r} is not an LED pattern; write 'off', 'on' or 'blink ON_S OFF_S'")

    def __str__(self) -> str:
        if self.on_s == 0:
            return "off"
        if self.off_s == 0:
            return "on"
        return f"blink {self.on_s:g} {self.off_s:g}"


DEFAULT_PATTERNS: dict[str, str] = {
    "idle": "off",
    "calling": "blink 0.5 0.5",
    "ringing": "blink 0.15 0.15",
    "connecting": "blink 0.1 0.4",
    "in_call": "on",
    "muted": "blink 1.5 0.25",
    "missed": "blink 0.1 1.9",
    "offline": "blink 0.05 2.95",
    "error": "blink 0.05 0.05",
}


def _check_pin(value: Any) -> str:
    text = str(value)
    if not PIN_RE.match(text):
        raise ValueError(f"{value!r} is not a GPIO pin; write e.g. 17, GPIO17 or BOARD11")
    return f"GPIO{text}" if text.isdigit() else text


class ButtonConfig(Model):
    name: str
    pin: str
    press: Action = Action.NONE
    hold: Action = Action.NONE
    pull_up: bool = True
    bounce_time: float | None = Field(default=0.02, ge=0)
    min_press: float = Field(default=0.05, ge=0)
    cooldown: float = Field(default=1.0, ge=0)
    hold_time: float = Field(default=1.5, gt=0)

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, value: Any) -> str:
        return _check_pin(value)

    @model_validator(mode="after")
    def _times(self) -> ButtonConfig:
        if self.min_press >= self.hold_time:
            raise ValueError("min_press must be shorter than hold_time")
        return self


class StatusLed(Model):
    pin: str
    active_high: bool = True
    patterns: dict[str, str] = Field(default_factory=dict)

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, value: Any) -> str:
        return _check_pin(value)

    @field_validator("patterns", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML reads a bare on / off as true / false: take them as the patterns they spell.
        if isinstance(value, dict):
            return {
                k: ("on" if v else "off") if isinstance(v, bool) else v for k, v in value.items()
            }
        return value

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, value: dict[str, str]) -> dict[str, str]:
        for state, text in value.items():
            if state not in LED_STATES:
                raise ValueError(f"unknown LED state {state!r}; states are {', '.join(LED_STATES)}")
            Pattern.parse(text)
        return value

    def table(self) -> dict[str, Pattern]:
        merged = {**DEFAULT_PATTERNS, **self.patterns}
        return {state: Pattern.parse(text) for state, text in merged.items()}


class SimpleLed(Model):
    pin: str
    active_high: bool = True

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, value: Any) -> str:
        return _check_pin(value)


class LedsConfig(Model):
    status: StatusLed | None = None
    camera_live: SimpleLed | None = None


class RelayConfig(Model):
    pin: str
    active_high: bool = True
    pulse_ms: int = Field(default=1500, gt=0, le=60_000)
    unlock_roles: list[str] = Field(default_factory=lambda: ["admin"])
    min_interval_s: float = Field(default=5.0, ge=0)
    hangup_after_unlock_s: float | None = Field(default=3.0, ge=0)

    @field_validator("pin", mode="before")
    @classmethod
    def _pin(cls, value: Any) -> str:
        return _check_pin(value)
