"""Microphone → aiortc: a MediaStreamTrack fed by a named ALSA reader thread.

Each period read goes through the audio processor (echo cancellation against what the speaker
played, noise suppression, high-pass; :mod:`appliance.media.audio.processor`) when there is one,
then through the microphone gain and, on devices that use it instead, the half-duplex gate.

The reader thread reads one period (20 ms) per tick of a :class:`Pacer` on our clock, because
clockless devices (alsa-lib ``file``/``null``, some virtual PCMs) would otherwise deliver audio as
fast as the thread can read. Overruns (``-EPIPE``) are counted and the lost period goes out as
silence, so timestamps keep matching wall time. Frames cross to the event loop with
``call_soon_threadsafe`` into a small queue that drops the oldest period when the consumer lags.

On a real sound card, whose own clock drifts a few tens of ppm from ours, a blocking ``read``
simply waits when the card is slower; when it is faster its buffer (``periods`` x 20 ms) fills over
tens of minutes and one overrun (counted, one period of silence) resets it. Calls are shorter.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import threading
from typing import Any

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from appliance.clock import Clock, SystemClock
from appliance.errors import AudioDeviceError
from appliance.media.audio.duplex import HalfDuplex
from appliance.media.audio.pacer import Pacer, raise_priority
from appliance.media.audio.pcm import PCM
from appliance.media.audio.processor import AudioProcessor
from appliance.media.audio.stats import CaptureStats

__all__ = ["AudioCapture"]

logger = logging.getLogger(__name__)

_LOG_EVERY = 100  # repeat xrun warnings once per this many, not once per period


class AudioCapture(MediaStreamTrack):
    """An aiortc audio track reading S16 periods from ``pcm`` (48 kHz mono for Opus).

    The reader thread starts on :meth:`start` or on the first :meth:`recv`; :meth:`stop` ends the
    track, stops and joins the thread and closes the PCM. It is idempotent.
    """

    kind = "audio"

    def __init__(
        self,
        pcm: PCM,
        *,
        clock: Clock | None = None,
        duplex: HalfDuplex | None = None,
        processor: AudioProcessor | None = None,
        queue_periods: int = 5,
        gain_db: float = 0.0,
        priority: int = 0,
    ) -> None:
        super().__init__()
        self._pcm = pcm
        self._format = pcm.format
        self._clock = clock or SystemClock()
        self._duplex = duplex
        self._processor = processor
        self._priority = priority
        self._gain = 10.0 ** (gain_db / 20.0)
        self._layout = "mono" if self._format.channels == 1 else "stereo"
        self._time_base = fractions.Fraction(1, self._format.rate)
        self._queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._queue_periods = queue_periods
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.stats = CaptureStats()
        self.error: AudioDeviceError | None = None
        self.pacer = Pacer(self._clock, self._format.period_seconds)

    @property
    def device(self) -> str:
        return self._pcm.name

    def start(self) -> None:
        """Start reading (call from the event loop)."""
        if self._thread is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        if self._processor is not None:
            self._processor.start_stream()
        self._thread = threading.Thread(
            target=self._run, name=f"audio-capture:{self._pcm.name}", daemon=True
        )
        self._thread.start()
        logger.info("AudioCapture(%s) started: %s", self._pcm.name, self._format)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self.start()
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        data, pts = item
        frame = AudioFrame(format="s16", layout=self._layout, samples=self._format.period_frames)
        frame.planes[0].update(data)
        frame.pts = pts
        frame.sample_rate = self._format.rate
        frame.time_base = self._time_base
        return frame

    def stop(self) -> None:
        super().stop()
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                logger.warning("AudioCapture(%s) reader thread did not stop", self._pcm.name)
        self._pcm.close()
        if self._processor is not None:
            self._processor.end_stream()
        self._end_queue()
        logger.info("AudioCapture(%s) stopped: %s", self._pcm.name, self.stats)

    # -- event loop side -------------------------------------------------------------------

    def _deliver(self, item: tuple[bytes, int]) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= self._queue_periods:
            self._queue.get_nowait()
            self.stats.dropped += 1
        self._queue.put_nowait(item)

    def _end_queue(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def _failed(self, err: AudioDeviceError) -> None:
        self.error = err
        self.stop()

    # -- reader thread ---------------------------------------------------------------------

    def _run(self) -> None:
        raise_priority(self._priority)
        fmt = self._format
        silence = bytes(fmt.period_bytes)
        pts = 0
        while self.pacer.wait(self._stop):
            try:
                frames, data = self._pcm.read()
            except AudioDeviceError as err:
                logger.error("AudioCapture(%s) device failed: %s", self._pcm.name, err)
                self._to_loop(self._failed, err)
                return
            if frames < 0:
                self.stats.overruns += 1
                if self.stats.overruns % _LOG_EVERY == 1:
                    logger.warning(
                        "AudioCapture(%s) overrun (%d so far)", self._pcm.name, self.stats.overruns
                    )
                data = silence
            elif len(data) < fmt.period_bytes:
                self.stats.short_reads += 1
                data = data + silence[len(data) :]
            if self._processor is not None:
                data = self._processor.process(data, self._clock.monotonic())
            data = self._apply_duplex(data)
            self.stats.periods += 1
            self.stats.frames_captured += fmt.period_frames
            if not self._to_loop(self._deliver, (data, pts)):
                return
            pts += fmt.period_frames

    def _apply_duplex(self, data: bytes) -> bytes:
        """The configured microphone gain, times the half-duplex attenuation while the far end talks."""
        gain = self._gain
        if self._duplex is not None:
            duplex_gain = self._duplex.mic_gain()
            if duplex_gain < 1.0:
                self.stats.attenuated += 1
                gain *= duplex_gain
        if gain == 1.0:
            return data
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) * gain
        return np.clip(samples, -32768, 32767).astype("<i2").tobytes()

    def _to_loop(self, callback: Any, arg: Any) -> bool:
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:  # the loop closed between the check and the call
            return False
        return True

    def __repr__(self) -> str:
        return f"AudioCapture({self._pcm.name!r}, {self.readyState}, {self.stats})"
