"""Test tones as raw S16 PCM, and the dominant frequency of a PCM buffer (numpy FFT).

alsa-lib's ``file`` plugin returns an ``infile`` byte for byte (a WAV header would come back as
samples), so tones are raw interleaved S16_LE. Check audio by the tone's frequency at the far end,
never by "not silent".
"""

from __future__ import annotations

import asyncio
import fractions
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = [
    "FedToneTrack",
    "dominant_frequency",
    "read_pcm",
    "tone_pcm",
    "tone_samples",
    "write_tone_file",
]


def tone_samples(
    freq: float, seconds: float, *, rate: int = 48000, amplitude: float = 0.3, channels: int = 1
) -> np.ndarray:
    """A sine as int16, interleaved when ``channels`` > 1 (the same signal on every channel)."""
    n = round(seconds * rate)
    t = np.arange(n) / rate
    mono = (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype(np.int16)
    return np.repeat(mono, channels) if channels > 1 else mono


def tone_pcm(
    freq: float, seconds: float, *, rate: int = 48000, amplitude: float = 0.3, channels: int = 1
) -> bytes:
    """Raw S16_LE bytes of :func:`tone_samples`."""
    samples = tone_samples(freq, seconds, rate=rate, amplitude=amplitude, channels=channels)
    return samples.astype("<i2").tobytes()


def write_tone_file(
    path: Path,
    freq: float,
    seconds: float,
    *,
    rate: int = 48000,
    amplitude: float = 0.3,
    channels: int = 1,
) -> Path:
    path.write_bytes(tone_pcm(freq, seconds, rate=rate, amplitude=amplitude, channels=channels))
    return path


def read_pcm(source: Path | bytes, *, channels: int = 1) -> np.ndarray:
    """Raw S16_LE PCM → int16 array of the first channel."""
    data = source.read_bytes() if isinstance(source, Path) else source
    usable = len(data) // (2 * channels) * (2 * channels)
    samples = np.frombuffer(data[:usable], dtype="<i2")
    return samples[::channels] if channels > 1 else samples


def dominant_frequency(
    pcm: bytes | np.ndarray, *, rate: int = 48000, channels: int = 1, min_freq: float = 20.0
) -> float:
    """The strongest frequency in ``pcm`` (Hz, ~0.1 Hz resolution by parabolic interpolation).

    Returns 0.0 for silence, so a silent buffer never "matches" a tone.
    """
    samples = read_pcm(pcm, channels=channels) if isinstance(pcm, bytes) else pcm
    x = samples.astype(np.float64)
    if x.size < 64 or not np.any(x):
        return 0.0
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    freqs = np.fft.rfftfreq(x.size, 1.0 / rate)
    spectrum[freqs < min_freq] = 0.0
    k = int(np.argmax(spectrum))
    if spectrum[k] <= 0.0:
        return 0.0
    if 0 < k < spectrum.size - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        denom = a - 2 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
        return float((k + offset) * rate / x.size)
    return float(freqs[k])


_PERIOD = 960


class FedToneTrack(MediaStreamTrack):
    """A remote-like track of 20 ms stereo 48 kHz tone frames (what aiortc's Opus decoder yields).

    It hands out only as many frames as the test has released with :meth:`feed`.
    """

    kind = "audio"

    def __init__(self, freq: float, periods: int) -> None:
        super().__init__()
        self._samples = tone_samples(freq, periods * 0.020, channels=2)
        self._sent = 0
        self._periods = periods
        self._released = asyncio.Semaphore(0)

    def feed(self, count: int = 1) -> None:
        for _ in range(count):
            self._released.release()

    async def recv(self) -> av.AudioFrame:
        await self._released.acquire()
        if self._sent >= self._periods:
            self.stop()
            raise MediaStreamError
        chunk = self._samples[self._sent * 2 * _PERIOD : (self._sent + 1) * 2 * _PERIOD]
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = self._sent * _PERIOD
        frame.time_base = fractions.Fraction(1, 48000)
        self._sent += 1
        return frame
