"""The audio of one appliance: a long-lived speaker path with chimes, a microphone track per call.

The playback device stays open for the daemon's lifetime (a chime rings before any call exists);
a MediaStreamTrack cannot be restarted once stopped, so each call gets a fresh
:class:`AudioCapture` from :meth:`AudioDevices.new_capture`. Counters of all of them add up in
:meth:`AudioDevices.stats` for ``appliance status``.

One :class:`AudioProcessor` (WebRTC APM) lives as long as the devices: the speaker feeds it what
it plays, each call's microphone reads through it, and the echo canceller stays adapted to the
room from one call to the next. Where the APM cannot run (no wheel for the board) and echo
cancellation was left to its default, the devices fall back to half-duplex, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.clock import Clock, SystemClock
from appliance.errors import AudioProcessingUnavailable
from appliance.media.audio.apm import Apm, open_apm
from appliance.media.audio.capture import AudioCapture
from appliance.media.audio.chime import ChimePlayer
from appliance.media.audio.duplex import HalfDuplex
from appliance.media.audio.pcm import PCM, open_capture, open_playback
from appliance.media.audio.playback import AudioPlayback
from appliance.media.audio.processor import AudioProcessor
from appliance.media.audio.settings import AudioSettings, HalfDuplexSettings
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
        apm: Apm | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock or SystemClock()
        self.processing_error: str | None = None
        self.processor = self._open_processor(apm)
        half_duplex = settings.half_duplex
        if (
            half_duplex is None
            and self.processing_error is not None
            and settings.processing.echo_cancellation is None
        ):
            logger.warning(
                "AudioDevices: no echo cancellation here (%s); falling back to half-duplex"
                " (set media.audio.half_duplex to tune it)",
                self.processing_error,
            )
            half_duplex = HalfDuplexSettings()
        self.duplex = HalfDuplex(half_duplex, self._clock) if half_duplex else None
        self.playback = AudioPlayback(
            playback_pcm,
            clock=self._clock,
            duplex=self.duplex,
            buffer_periods=settings.buffer_periods,
            target_periods=settings.target_periods,
            duck_db=settings.duck_db,
            call_volume_db=settings.call_volume_db,
            sounds_volume_db=settings.sounds_volume_db,
            processor=self.processor,
            priority=settings.thread_priority,
        )
        self.chimes = ChimePlayer(self.playback, settings.sounds)
        self._captures: list[AudioCapture] = []
        self._finished_capture = CaptureStats()

    def _open_processor(self, apm: Apm | None) -> AudioProcessor | None:
        s = self.settings
        if not s.processing_enabled:
            return None
        features = {
            "echo_cancellation": s.echo_cancellation,
            "noise_suppression": s.processing.noise_suppression,
            "high_pass": s.processing.high_pass,
            "auto_gain": s.processing.auto_gain,
        }
        try:
            apm = apm or open_apm(
                echo_cancellation=s.echo_cancellation,
                noise_suppression=s.processing.noise_suppression,
                high_pass=s.processing.high_pass,
                auto_gain=s.processing.auto_gain,
            )
        except AudioProcessingUnavailable as err:
            logger.error("AudioDevices: audio processing unavailable: %s", err)
            self.processing_error = str(err)
            return None
        playback = s.playback_format()
        return AudioProcessor(
            apm,
            s.capture_format(),
            features=features,
            reference=s.echo_cancellation,
            # what the device buffers on each side: the APM's hint (AEC3 measures it anyway)
            stream_delay_ms=s.period_ms * (playback.periods + 1),
        )

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
            pcm,
            clock=self._clock,
            duplex=self.duplex,
            processor=self.processor,
            gain_db=self.settings.mic_gain_db,
            priority=self.settings.thread_priority,
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
            "processing": self.processing_stats(),
            "playout": self.playback.playout(),
        }

    def processing_stats(self) -> dict[str, Any]:
        """APM state (``on``, ``off``, ``unavailable``, ``failed``) and its measured figures."""
        if self.processor is not None:
            return self.processor.stats()
        if self.processing_error is not None:
            return {"state": "unavailable", "error": self.processing_error}
        return {"state": "off"}

    async def close(self) -> None:
        for capture in self._captures:
            capture.stop()
        self._collect()
        await self.playback.stop()
        if self.processor is not None:
            self.processor.close()

    def __repr__(self) -> str:
        return (
            f"AudioDevices({self.settings.capture_device!r} -> {self.settings.playback_device!r})"
        )
