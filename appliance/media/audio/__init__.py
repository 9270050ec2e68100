"""ALSA audio for calls: microphone track, remote-audio playback, chimes.

Only :mod:`appliance.media.audio.pcm` imports pyalsaaudio.
"""

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
