"""Typed audio settings: the ``audio:`` block of a device config.

The config loader embeds :class:`AudioSettings`; components receive it, they never read files.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from appliance.media.audio.pcm import PcmFormat

__all__ = ["AudioSettings", "HalfDuplexSettings"]

# ALSA PCM names: `default`, `pipewire`, `plughw:1,0`, `plughw:CARD=Device,DEV=0`, `dmix:…`.
_DEVICE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.,=\-]+)?$")


class HalfDuplexSettings(BaseModel):
    """Turn the microphone down while the far end is audible (for speakers without echo cancel)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold_dbfs: float = Field(-40.0, le=0.0)
    """Far-end level above which the far end counts as talking."""
    attenuation_db: float = Field(24.0, ge=0.0, le=120.0)
    """How much the microphone is turned down meanwhile."""
    hold_ms: int = Field(300, ge=0, le=5000)
    """How long the microphone stays down after the far end went quiet."""


class AudioSettings(BaseModel):
    """ALSA devices and buffering. Device names are ALSA PCM names (`arecord -L`, `aplay -L`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    capture_device: str = "default"
    playback_device: str = "default"
    rate: int = Field(48000, ge=8000, le=192000)
    """Device sample rate; capture is always sent at 48 kHz mono (Opus), playback is resampled."""
    channels: int = Field(1, ge=1, le=2)
    """Playback channels; capture is mono."""
    period_ms: int = Field(20, ge=5, le=100)
    buffer_ms: int = Field(120, ge=20, le=2000)
    """Bound of the playback buffer of each remote track; older audio is dropped beyond it."""
    jitter_ms: int = Field(40, ge=0, le=1000)
    """Level the playback buffer is kept at; more absorbs network jitter, less is less delay."""
    duck_db: float = Field(12.0, ge=0.0, le=120.0)
    """How much call audio is turned down while a chime plays over it."""
    mic_gain_db: float = Field(0.0, ge=-60.0, le=30.0)
    """Gain applied to the microphone before it is sent (negative: quieter), clipped at full scale."""
    call_volume_db: float = Field(0.0, ge=-60.0, le=20.0)
    """Volume of the far end's voice on the speaker, relative to as received."""
    sounds_volume_db: float = Field(0.0, ge=-60.0, le=20.0)
    """Volume of the chime, ring-back and pre-announce sounds, relative to the WAV files."""
    half_duplex: HalfDuplexSettings | None = None
    """Set it for devices without acoustic echo cancellation (see the README, `pipewire`)."""
    sounds: dict[str, Path] = Field(default_factory=dict)
    """WAV files that replace or add to the packaged sounds (`chime`, `ringback`, `preannounce`)."""

    @field_validator("capture_device", "playback_device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not _DEVICE_NAME.match(value):
            raise ValueError(
                f"{value!r} is not an ALSA PCM name (e.g. default, pipewire, plughw:1,0)"
            )
        return value

    @property
    def buffer_periods(self) -> int:
        return max(1, self.buffer_ms // self.period_ms)

    @property
    def target_periods(self) -> int:
        return max(1, self.jitter_ms // self.period_ms)

    def capture_format(self) -> PcmFormat:
        return PcmFormat.for_period(rate=48000, channels=1, period_ms=self.period_ms)

    def playback_format(self) -> PcmFormat:
        return PcmFormat.for_period(
            rate=self.rate, channels=self.channels, period_ms=self.period_ms
        )
