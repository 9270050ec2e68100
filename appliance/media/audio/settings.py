"""Typed audio settings: the ``audio:`` block of a device config.

The config loader embeds :class:`AudioSettings`; components receive it, they never read files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from appliance.media.audio.pcm import PcmFormat

__all__ = ["AudioSettings", "HalfDuplexSettings", "ProcessingSettings"]

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


class ProcessingSettings(BaseModel):
    """WebRTC audio processing of the microphone (see ``appliance/media/audio/apm.py``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    echo_cancellation: bool | None = None
    """AEC3 against what the speaker plays. Unset: on, unless ``half_duplex`` is configured."""
    noise_suppression: bool = True
    high_pass: bool = True
    """Removes rumble and DC below ~80 Hz (AEC3 filters its input this way anyway)."""
    auto_gain: bool = False
    """AGC2: levels a quiet or distant talker; off by default (it also lifts the room's noise)."""


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
    jitter_ms: int | Literal["auto"] = "auto"
    """Level the playback buffer is kept at: ``auto`` follows the measured arrival jitter of each
    remote track; a number of ms (0..1000) fixes it (more absorbs jitter, less is less delay)."""
    duck_db: float = Field(12.0, ge=0.0, le=120.0)
    """How much call audio is turned down while a chime plays over it."""
    mic_gain_db: float = Field(0.0, ge=-60.0, le=30.0)
    """Gain applied to the microphone before it is sent (negative: quieter), clipped at full scale."""
    call_volume_db: float = Field(0.0, ge=-60.0, le=20.0)
    """Volume of the far end's voice on the speaker, relative to as received."""
    sounds_volume_db: float = Field(0.0, ge=-60.0, le=20.0)
    """Volume of the chime, ring-back and pre-announce sounds, relative to the WAV files."""
    processing: ProcessingSettings = Field(default_factory=ProcessingSettings)
    """Echo cancellation, noise suppression, high-pass and gain control of the microphone."""
    half_duplex: HalfDuplexSettings | None = None
    """The fallback where echo cancellation cannot run: the mic is turned down while the far end
    talks. Setting it turns the default echo canceller off; both on is a config error."""
    thread_priority: int = Field(10, ge=0, le=99)
    """Real-time (round-robin) priority of the capture and playback threads, 0 for normal; needs
    CAP_SYS_NICE or systemd's LimitRTPRIO, else the threads keep normal priority (logged)."""
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

    @field_validator("jitter_ms")
    @classmethod
    def _jitter(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 1000:
            raise ValueError(f"{value} ms: use auto or 0..1000")
        return value

    @field_validator("half_duplex")
    @classmethod
    def _one_echo_remedy(
        cls, value: HalfDuplexSettings | None, info: ValidationInfo
    ) -> HalfDuplexSettings | None:
        processing = info.data.get("processing")
        if value is not None and processing is not None and processing.echo_cancellation:
            raise ValueError(
                "half_duplex and processing.echo_cancellation cannot both be on"
                " (half-duplex would mute the microphone the echo canceller works on);"
                " remove half_duplex, or set processing.echo_cancellation: false"
            )
        return value

    @model_validator(mode="after")
    def _whole_10ms_frames(self) -> AudioSettings:
        if self.processing_enabled and self.period_ms % 10:
            raise ValueError(
                f"period_ms {self.period_ms} is not a multiple of 10: audio processing works on"
                " 10 ms frames (use 10, 20, 30, ... or turn processing off)"
            )
        if self.echo_cancellation and self.rate % 100:
            raise ValueError(
                f"rate {self.rate} Hz has no whole 10 ms frames, which echo cancellation needs"
                " (use 48000, 44100, 32000, 16000, ...)"
            )
        return self

    @property
    def processing_enabled(self) -> bool:
        p = self.processing
        return self.echo_cancellation or p.noise_suppression or p.high_pass or p.auto_gain

    @property
    def echo_cancellation(self) -> bool:
        """Whether AEC runs: as configured, else on unless half-duplex is the chosen remedy."""
        configured = self.processing.echo_cancellation
        return self.half_duplex is None if configured is None else configured

    @property
    def buffer_periods(self) -> int:
        return max(1, self.buffer_ms // self.period_ms)

    @property
    def target_periods(self) -> int | None:
        """The fixed playout level in periods, or None when it follows the measured jitter."""
        if self.jitter_ms == "auto":
            return None
        return max(1, self.jitter_ms // self.period_ms)

    def capture_format(self) -> PcmFormat:
        return PcmFormat.for_period(rate=48000, channels=1, period_ms=self.period_ms)

    def playback_format(self) -> PcmFormat:
        return PcmFormat.for_period(
            rate=self.rate, channels=self.channels, period_ms=self.period_ms
        )
