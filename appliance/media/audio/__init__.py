"""ALSA audio for calls: microphone track, remote-audio playback, chimes.

Only :mod:`appliance.media.audio.pcm` imports pyalsaaudio.

Names are imported lazily: the device config embeds :class:`AudioSettings`, and reading it
(``appliance check``, ``appliance press --config``) must not pay for aiortc, av and numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.lazyexports import lazy_exports

_LAZY: dict[str, str] = {
    "AudioCapture": "appliance.media.audio.capture",
    "PACKAGED_SOUNDS": "appliance.media.audio.chime",
    "ChimePlayer": "appliance.media.audio.chime",
    "load_wav": "appliance.media.audio.chime",
    "AudioDevices": "appliance.media.audio.devices",
    "HalfDuplex": "appliance.media.audio.duplex",
    "EPIPE": "appliance.media.audio.pcm",
    "PCM": "appliance.media.audio.pcm",
    "AlsaPcm": "appliance.media.audio.pcm",
    "PcmFormat": "appliance.media.audio.pcm",
    "XrunInjectingPcm": "appliance.media.audio.pcm",
    "open_capture": "appliance.media.audio.pcm",
    "open_playback": "appliance.media.audio.pcm",
    "AudioPlayback": "appliance.media.audio.playback",
    "AudioSettings": "appliance.media.audio.settings",
    "HalfDuplexSettings": "appliance.media.audio.settings",
    "CaptureStats": "appliance.media.audio.stats",
    "PlaybackStats": "appliance.media.audio.stats",
    "Voice": "appliance.media.audio.voice",
}

__all__ = [
    "EPIPE",
    "PACKAGED_SOUNDS",
    "PCM",
    "AlsaPcm",
    "AudioCapture",
    "AudioDevices",
    "AudioPlayback",
    "AudioSettings",
    "CaptureStats",
    "ChimePlayer",
    "HalfDuplex",
    "HalfDuplexSettings",
    "PcmFormat",
    "PlaybackStats",
    "Voice",
    "XrunInjectingPcm",
    "load_wav",
    "open_capture",
    "open_playback",
]

if TYPE_CHECKING:
    from appliance.media.audio.capture import AudioCapture
    from appliance.media.audio.chime import PACKAGED_SOUNDS, ChimePlayer, load_wav
    from appliance.media.audio.devices import AudioDevices
    from appliance.media.audio.duplex import HalfDuplex
    from appliance.media.audio.pcm import (
        EPIPE,
        PCM,
        AlsaPcm,
        PcmFormat,
        XrunInjectingPcm,
        open_capture,
        open_playback,
    )
    from appliance.media.audio.playback import AudioPlayback
    from appliance.media.audio.settings import AudioSettings, HalfDuplexSettings
    from appliance.media.audio.stats import CaptureStats, PlaybackStats
    from appliance.media.audio.voice import Voice


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
