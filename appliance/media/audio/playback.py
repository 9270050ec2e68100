"""Remote audio and local sounds → one ALSA playback device.

Every attached remote track is read by its own asyncio task for as long as it lives (aiortc
buffers grow without bound when a received track is left unread), resampled to the device format
with :class:`av.AudioResampler` and cut into periods in a small bounded buffer that drops its oldest
period when full and skips one whenever it has stayed above its target level (``target_periods``)
for half a second, so a burst at the start of a call does not become latency for the rest of it. A named writer thread, paced by our clock (clockless devices would swallow
audio as fast as it is written), mixes one period of every buffer and every playing sound and
writes it, after a cushion of ``prefill_periods`` of silence. Every period the device took
(silence, call audio and chimes after mixing, volume and clipping) is handed to the audio
processor as the echo canceller's far-end reference. Sounds *duck* the call: while a chime marked ``duck`` plays, call audio is turned down
by ``duck_db`` and the chime is mixed on top, so a chime during a call is heard without cutting the
caller off. An underrun (``-EPIPE``) is counted; the writer then puts one period of silence in
front of the data to give the device a cushion again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.clock import Clock, SystemClock
from appliance.errors import AudioDeviceError
from appliance.media.aiortc_compat import (
    install_audio_jitter_buffer,
    release_audio_jitter_buffer,
)
from appliance.media.audio.duplex import HalfDuplex
from appliance.media.audio.jitter import AudioJitterBuffer, JitterEstimator
from appliance.media.audio.pacer import Pacer, raise_priority
from appliance.media.audio.pcm import PCM, PcmFormat
from appliance.media.audio.processor import AudioProcessor
from appliance.media.audio.stats import PlaybackStats
from appliance.media.audio.voice import Voice

__all__ = ["AudioPlayback"]

logger = logging.getLogger(__name__)

_LOG_EVERY = 100
_TRIM_AFTER = 25  # periods above target before one is skipped (0.5 s at 20 ms)
_MAX_GAP = 0.2  # seconds of missing frames filled with silence; longer is a new timeline


class _TrackBuffer:
    """Periods of one remote track at the device format; filled on the loop, drained by the writer.

    It starts (and restarts after running dry) once it holds its target level: a fixed number
    of periods, or with ``target_periods=None`` what :class:`JitterEstimator` measures the
    track's arrival jitter needs. A gap in the frames' timestamps (a packet lost on the way) up to
    ``_MAX_GAP`` is filled with silence, so a loss does not eat into the level.
    """

    def __init__(
        self,
        track_id: str,
        fmt: PcmFormat,
        max_periods: int,
        stats: PlaybackStats,
        target_periods: int | None = 2,
        clock: Clock | None = None,
    ):
        self.track_id = track_id
        self._fmt = fmt
        self._samples = fmt.period_frames * fmt.channels
        self._resampler = av.AudioResampler(
            format="s16", layout="mono" if fmt.channels == 1 else "stereo", rate=fmt.rate
        )
        self._pending = np.zeros(0, dtype=np.int16)
        self._periods: deque[np.ndarray] = deque()
        self._max = max_periods
        self._stats = stats
        self._clock = clock or SystemClock()
        self._fixed = None if target_periods is None else max(1, min(target_periods, max_periods))
        self.jitter = JitterEstimator(fmt.period_seconds, max_periods=max(1, max_periods - 1))
        self._target = self._fixed or self.jitter.target_periods
        self._next_media: float | None = None
        self._over_target = 0
        self._lock = threading.Lock()
        self._filling = True
        self.started = False

    @property
    def target(self) -> int:
        return self._target

    def push(self, frame: av.AudioFrame) -> None:
        silence = self._conceal_gap(frame)
        chunks = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not chunks:
            return
        data = np.concatenate([self._pending, silence, *chunks]).astype(np.int16, copy=False)
        self._stats.frames_received += sum(c.size for c in chunks) // self._fmt.channels
        whole = data.size // self._samples * self._samples
        with self._lock:
            for start in range(0, whole, self._samples):
                if len(self._periods) >= self._max:
                    self._periods.popleft()
                    self._stats.dropped += 1
                self._periods.append(data[start : start + self._samples])
            self._target = self._fixed or self.jitter.target_periods
        self._pending = data[whole:].copy()

    def _conceal_gap(self, frame: av.AudioFrame) -> np.ndarray:
        """Silence for the frames missing before ``frame``; measures its arrival on the way."""
        none = np.zeros(0, dtype=np.int16)
        if frame.pts is None or frame.time_base is None or not frame.sample_rate:
            return none
        media = float(frame.pts * frame.time_base)
        expected, self._next_media = self._next_media, media + frame.samples / frame.sample_rate
        gap = 0.0 if expected is None else media - expected
        if abs(gap) > _MAX_GAP:  # a restarted sender or a long link drop: a new timeline
            self.jitter.reset()
            gap = 0.0
        self.jitter.arrived(self._clock.monotonic(), media)
        if gap < 0.5 / frame.sample_rate * frame.samples:
            return none
        self._stats.concealed += 1
        return np.zeros(round(gap * self._fmt.rate) * self._fmt.channels, dtype=np.int16)

    def pop(self) -> np.ndarray | None:
        with self._lock:
            if self._filling:
                if len(self._periods) < self._target:
                    return None
                self._filling = False
                self.started = True
            if not self._periods:
                self._over_target = 0
                self._filling = True  # ran dry: play again once the target level is back
                self._stats.starved += 1
                return None
            # The writer drains one period per period, so whatever burst first filled the buffer
            # would stay as latency for the whole call. Above target for half a second: skip one.
            self._over_target = (
                self._over_target + 1 if len(self._periods) > self._target + 1 else 0
            )
            if self._over_target >= _TRIM_AFTER:
                self._periods.popleft()
                self._stats.trimmed += 1
                self._over_target = 0
            return self._periods.popleft()

    def __len__(self) -> int:
        return len(self._periods)


class AudioPlayback:
    """Plays remote tracks and local sounds on ``pcm``. Start it, attach tracks, stop it."""

    def __init__(
        self,
        pcm: PCM,
        *,
        clock: Clock | None = None,
        duplex: HalfDuplex | None = None,
        buffer_periods: int = 6,
        target_periods: int | None = 2,
        duck_db: float = 12.0,
        prefill_periods: int = 2,
        call_volume_db: float = 0.0,
        sounds_volume_db: float = 0.0,
        processor: AudioProcessor | None = None,
        priority: int = 0,
    ) -> None:
        # while a playback lives, audio received goes to the decoder on arrival: jitter is
        # absorbed here, once (released when it stops)
        install_audio_jitter_buffer(AudioJitterBuffer)
        self._pcm = pcm
        self._priority = priority
        self._processor = processor
        self._format = pcm.format
        self._clock = clock or SystemClock()
        self._duplex = duplex
        self._buffer_periods = buffer_periods
        self._target_periods = target_periods
        self._duck_gain = 10.0 ** (-duck_db / 20.0)
        self._call_gain = 10.0 ** (call_volume_db / 20.0)
        self._sounds_gain = 10.0 ** (sounds_volume_db / 20.0)
        self._prefill = prefill_periods
        self._buffers: dict[str, _TrackBuffer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._voices: list[Voice] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.stats = PlaybackStats()
        self.error: AudioDeviceError | None = None
        self.pacer = Pacer(self._clock, self._format.period_seconds)

    @property
    def device(self) -> str:
        return self._pcm.name

    @property
    def format(self) -> PcmFormat:
        return self._format

    def start(self) -> None:
        """Start the writer thread (call from the event loop)."""
        if self._thread is not None or self._closed:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"audio-playback:{self._pcm.name}", daemon=True
        )
        self._thread.start()
        logger.info("AudioPlayback(%s) started: %s", self._pcm.name, self._format)

    def attach(self, track: MediaStreamTrack) -> asyncio.Task[None]:
        """Consume ``track`` until it ends and play it. Returns the consuming task."""
        if track.kind != "audio":
            raise ValueError(f"AudioPlayback attaches audio tracks, got a {track.kind} track")
        if track.id in self._tasks:
            return self._tasks[track.id]
        self.start()
        buffer = _TrackBuffer(
            track.id,
            self._format,
            self._buffer_periods,
            self.stats,
            self._target_periods,
            self._clock,
        )
        with self._lock:
            self._buffers[track.id] = buffer
        task = asyncio.get_running_loop().create_task(
            self._consume(track, buffer), name=f"audio-playback:{track.id}"
        )
        self._tasks[track.id] = task
        logger.info("AudioPlayback(%s) attached track %s", self._pcm.name, track.id)
        return task

    def play(self, samples: np.ndarray, *, loop: bool = False, duck: bool = True) -> Voice:
        """Mix interleaved S16 ``samples`` (already at the device format) into the output."""
        voice = Voice(samples, loop=loop, duck=duck, loop_ref=asyncio.get_running_loop())
        if self._closed or self.error is not None:
            voice.finish()  # nothing will play it; whoever waits for it must not hang
            return voice
        with self._lock:
            self._voices.append(voice)
        self.stats.sounds_played += 1
        self.start()
        return voice

    @property
    def tracks(self) -> list[str]:
        return list(self._buffers)

    def playout(self) -> dict[str, dict[str, float | int | None]]:
        """Per remote track: target level and level (periods), measured jitter (ms)."""
        with self._lock:
            buffers = list(self._buffers.values())
        return {
            b.track_id: {"target": b.target, "level": len(b), "jitter_ms": b.jitter.jitter_ms}
            for b in buffers
        }

    def buffered_periods(self) -> int:
        """Periods waiting in the fullest remote-track buffer (the playout delay, in periods)."""
        with self._lock:
            return max((len(b) for b in self._buffers.values()), default=0)

    async def stop(self) -> None:
        """Stop consuming, stop and join the writer, close the device. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._stop.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 2.0)
        self._finish_voices()
        self._pcm.close()
        release_audio_jitter_buffer()
        logger.info("AudioPlayback(%s) stopped: %s", self._pcm.name, self.stats)

    def _finish_voices(self) -> None:
        with self._lock:
            voices, self._voices = self._voices, []
        for voice in voices:
            voice.finish()

    def close_device(self) -> None:
        """Close the device of a playback that was never started (an aborted open)."""
        if self._thread is None and not self._closed:
            self._closed = True
            self._pcm.close()
            release_audio_jitter_buffer()

    async def _consume(self, track: MediaStreamTrack, buffer: _TrackBuffer) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.AudioFrame):
                    buffer.push(frame)
        except MediaStreamError:
            logger.info("AudioPlayback(%s) track %s ended", self._pcm.name, track.id)
        finally:
            with self._lock:
                self._buffers.pop(track.id, None)
            self._tasks.pop(track.id, None)

    # -- writer thread ---------------------------------------------------------------------

    def _mix(self) -> bytes:
        samples = self._format.period_frames * self._format.channels
        call = np.zeros(samples, dtype=np.int32)
        with self._lock:
            buffers = list(self._buffers.values())
            voices = list(self._voices)
        for buffer in buffers:
            period = buffer.pop()
            if period is None:
                continue
            call += period
        if self._call_gain != 1.0:
            call = (call * self._call_gain).astype(np.int32)
        if self._duplex is not None:
            self._duplex.note_far_end(call)
        out = call
        if any(v.duck for v in voices):
            out = (call * self._duck_gain).astype(np.int32)
        for voice in voices:
            sound = voice.take(samples)
            if self._sounds_gain != 1.0:
                sound = (sound * self._sounds_gain).astype(np.int32)
            out += sound
            if voice.finished:
                with self._lock:
                    if voice in self._voices:
                        self._voices.remove(voice)
                voice.finish()
        return np.clip(out, -32768, 32767).astype("<i2").tobytes()

    def _run(self) -> None:
        raise_priority(self._priority)
        try:
            # A device that starts on its first write would otherwise hold a single period and
            # run dry at the first scheduling hiccup; this silence is the cushion we keep.
            for _ in range(self._prefill):
                self._write_period(bytes(self._format.period_bytes))
            while self.pacer.wait(self._stop):
                self._write_period(self._mix())
                self.stats.periods += 1
                self.stats.frames_played += self._format.period_frames
        except AudioDeviceError as err:
            logger.error("AudioPlayback(%s) device failed: %s", self._pcm.name, err)
            self.error = err
            self._finish_voices()

    def _write_period(self, data: bytes) -> None:
        silence = bytes(self._format.period_bytes)
        for _attempt in range(3):
            if self._write(data):
                return
            self.stats.underruns += 1
            if self.stats.underruns % _LOG_EVERY == 1:
                logger.warning(
                    "AudioPlayback(%s) underrun (%d so far)", self._pcm.name, self.stats.underruns
                )
            # pyalsaaudio has re-prepared the device; a period of silence first gives it a
            # cushion so the data that follows does not run dry at once.
            self._write(silence)

    def _write(self, data: bytes) -> bool:
        """Write one period; what the device took is the echo canceller's far-end reference."""
        if self._pcm.write(data) < 0:
            return False
        if self._processor is not None:
            self._processor.reference(data, self._format, self._clock.monotonic())
        return True

    def __repr__(self) -> str:
        state = "stopped" if self._closed else "running" if self._thread else "idle"
        return f"AudioPlayback({self._pcm.name!r}, {state}, tracks={len(self._buffers)})"
