"""The audio of one appliance: a long-lived speaker path with chimes, a microphone track per call.

The playback device stays open for the daemon's lifetime (a chime rings before any call exists);
a MediaStreamTrack cannot be restarted once stopped, so each call gets a fresh
:class:`AudioCapture` from :meth:`AudioDevices.new_capture`. Counters of all of them add up in
:meth:`AudioDevices.stats` for ``appliance status``.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.clock import Clock, SystemClock
from appliance.media.audio.capture import AudioCapture
from appliance.media.audio.chime import ChimePlayer
from appliance.media.audio.duplex import HalfDuplex
from appliance.media.audio.pcm import PCM, open_capture, open_playback
from appliance.media.audio.playback import AudioPlayback
from appliance.media.audio.settings import AudioSettings
from appliance.media.audio.stats import CaptureStats

__all__ = ["AudioDevices"]

logger = logging.getLogger(__name__)


class AudioDevices:
    """Open with :meth:`open` (from the event loop); close with :meth:`close`."""

    def __init__(
        self,
        settings: AudioSettings,
        playback_pcm: PCM,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self.duplex = (
            HalfDuplex(settings.half_duplex, self._clock) if settings.half_duplex else None
        )
        self.playback = AudioPlayback(
            playback_pcm,
            clock=self._clock,
            duplex=self.duplex,
            buffer_periods=settings.buffer_periods,
            target_periods=settings.target_periods,
            duck_db=settings.duck_db,
            call_volume_db=settings.call_volume_db,
            sounds_volume_db=settings.sounds_volume_db,
        )
        self.chimes = ChimePlayer(self.playback, settings.sounds)
        self._captures: list[AudioCapture] = []
        self._finished_capture = CaptureStats()

    @classmethod
    def open(cls, settings: AudioSettings, *, clock: Clock | None = None) -> AudioDevices:
        """Open the playback device, decode the sounds and start the writer thread."""
        devices = cls(
            settings,
            open_playback(settings.playback_device, settings.playback_format()),
            clock=clock,
        )
        try:
            devices.chimes.preload()
        except Exception:
            devices.playback.close_device()
            raise
        devices.playback.start()
        return devices

    def new_capture(self, pcm: PCM | None = None) -> AudioCapture:
        """A microphone track for one call (``pcm`` overrides the configured device)."""
        self._collect()
        if pcm is None:
            pcm = open_capture(self.settings.capture_device, self.settings.capture_format())
        capture = AudioCapture(
            pcm, clock=self._clock, duplex=self.duplex, gain_db=self.settings.mic_gain_db
        )
        self._captures.append(capture)
        return capture

    def _collect(self) -> None:
        for capture in [c for c in self._captures if c.readyState == "ended"]:
            for key, value in capture.stats.as_dict().items():
                setattr(self._finished_capture, key, getattr(self._finished_capture, key) + value)
            self._captures.remove(capture)

    def stats(self) -> dict[str, Any]:
        """``{"capture": {...}, "playback": {...}, "devices": {...}}`` for status output."""
        self._collect()
        capture = CaptureStats(**self._finished_capture.as_dict())
        for live in self._captures:
            for key, value in live.stats.as_dict().items():
                setattr(capture, key, getattr(capture, key) + value)
        return {
            "capture": capture.as_dict(),
            "playback": self.playback.stats.as_dict(),
            "devices": {
                "capture": self.settings.capture_device,
                "playback": self.settings.playback_device,
                "half_duplex": self.duplex is not None,
            },
        }

    async def close(self) -> None:
        for capture in self._captures:
            capture.stop()
        self._collect()
        await self.playback.stop()

    def __repr__(self) -> str:
        return (
            f"AudioDevices({self.settings.capture_device!r} -> {self.settings.playback_device!r})"
        )
