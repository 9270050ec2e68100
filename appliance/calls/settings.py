"""Call settings: what a call type (and a call's ``settings_override``) configures.

The blocks we implement (``audio``, ``video``, ``ring``, ``backstage``, ``limits``, ``session``,
``screensharing``) are strict: an unknown key is a mistake and is reported. The blocks for
features this server does not offer (recording, transcription, broadcasting, ...) exist because
Stream's SDK requires them in every response; whatever a request puts there, they answer
*disabled*.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetResolution(_Strict):
    width: int = Field(default=1280, ge=16, le=7680)
    height: int = Field(default=720, ge=16, le=4320)
    bitrate: int | None = Field(default=None, ge=0, le=100_000_000)


class NoiseCancellation(_Strict):
    mode: Literal["disabled", "available", "auto-on"] = "disabled"


class AudioSettings(_Strict):
    access_request_enabled: bool = False
    default_device: Literal["speaker", "earpiece"] = "speaker"
    hifi_audio_enabled: bool = False
    mic_default_on: bool = True
    opus_dtx_enabled: bool = True
    redundant_coding_enabled: bool = True
    speaker_default_on: bool = True
    noise_cancellation: NoiseCancellation = Field(default_factory=NoiseCancellation)


class VideoSettings(_Strict):
    access_request_enabled: bool = False
    camera_default_on: bool = True
    camera_facing: Literal["front", "back", "external"] = "front"
    enabled: bool = True
    target_resolution: TargetResolution = Field(default_factory=TargetResolution)


class RingSettings(_Strict):
    auto_cancel_timeout_ms: int = Field(default=30_000, ge=0, le=180_000)
    incoming_call_timeout_ms: int = Field(default=30_000, ge=0, le=180_000)
    missed_call_timeout_ms: int = Field(default=10_000, ge=0, le=180_000)


class BackstageSettings(_Strict):
    enabled: bool = False
    join_ahead_time_seconds: int = Field(default=0, ge=0, le=86_400 * 7)


class LimitsSettings(_Strict):
    max_participants: int | None = Field(default=None, ge=1, le=10_000)
    max_duration_seconds: int | None = Field(default=None, ge=1, le=86_400 * 365)
    max_participants_exclude_owner: bool | None = None
    max_participants_exclude_roles: list[str] = Field(default_factory=list)


class SessionSettings(_Strict):
    inactivity_timeout_seconds: int = Field(default=0, ge=0, le=86_400)


class ScreensharingSettings(_Strict):
    access_request_enabled: bool = False
    enabled: bool = False
    target_resolution: TargetResolution | None = None


def _disabled_blocks() -> dict[str, dict[str, Any]]:
    """The response shape of features not offered here, each saying it is off."""
    layout = {"name": "spotlight", "external_app_url": "", "external_css_url": ""}
    return {
        "broadcasting": {
            "enabled": False,
            "hls": {"auto_on": False, "enabled": False, "quality_tracks": [], "layout": layout},
            "rtmp": {"enabled": False, "quality": "720p", "layout": layout},
        },
        "encryption": {"mode": "disabled"},
        "frame_recording": {"capture_interval_in_seconds": 0, "mode": "disabled"},
        "geofencing": {"names": []},
        "individual_recording": {"mode": "disabled"},
        "raw_recording": {"mode": "disabled"},
        "recording": {"audio_only": False, "mode": "disabled", "quality": "720p", "layout": layout},
        "thumbnails": {"enabled": False},
        "transcription": {
            "closed_caption_mode": "disabled",
            "language": "auto",
            "mode": "disabled",
        },
        "ingress": {"enabled": False},
    }


DISABLED_FEATURES: tuple[str, ...] = tuple(_disabled_blocks())


class CallSettings(BaseModel):
    """Settings of a call type, or of one call after its ``settings_override``."""

    # Unknown top-level blocks are refused; the disabled-feature blocks are accepted and ignored.
    model_config = ConfigDict(extra="forbid")

    audio: AudioSettings = Field(default_factory=AudioSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    ring: RingSettings = Field(default_factory=RingSettings)
    backstage: BackstageSettings = Field(default_factory=BackstageSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    session: SessionSettings = Field(default_factory=SessionSettings)
    screensharing: ScreensharingSettings = Field(default_factory=ScreensharingSettings)
    broadcasting: dict[str, Any] | None = None
    encryption: dict[str, Any] | None = None
    frame_recording: dict[str, Any] | None = None
    geofencing: dict[str, Any] | None = None
    individual_recording: dict[str, Any] | None = None
    raw_recording: dict[str, Any] | None = None
    recording: dict[str, Any] | None = None
    thumbnails: dict[str, Any] | None = None
    transcription: dict[str, Any] | None = None
    ingress: dict[str, Any] | None = None

    def stored(self) -> dict[str, Any]:
        """What is written to the database: the offered blocks only."""
        return self.model_dump(mode="json", exclude=set(DISABLED_FEATURES))

    def response(self) -> dict[str, Any]:
        """``CallSettingsResponse`` as Stream's SDK parses it."""
        out = self.stored()
        out.update(_disabled_blocks())
        return out


def merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """Deep-merge ``override`` onto ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def effective_settings(
    type_settings: dict[str, Any], override: dict[str, Any] | None
) -> CallSettings:
    """The settings a call runs with: its type's, with the call's override on top."""
    return CallSettings.model_validate(merge(type_settings, override))
