"""ALSA audio for calls: microphone track, remote-audio playback, chimes.

Only :mod:`appliance.media.audio.pcm` imports pyalsaaudio.
"""

from appliance.media.audio.capture import AudioCapture
from appliance.media.audio.duplex import HalfDuplex
from appliance.media.audio.pcm import (
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

__all__ = [
    "PCM",
    "AlsaPcm",
    "AudioCapture",
    "AudioPlayback",
    "AudioSettings",
    "CaptureStats",
    "HalfDuplex",
    "HalfDuplexSettings",
    "PcmFormat",
    "PlaybackStats",
    "Voice",
    "XrunInjectingPcm",
    "open_capture",
    "open_playback",
]
