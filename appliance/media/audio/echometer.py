"""Figures of the echo path for ``appliance status``: its delay and how much echo is removed.

The WebRTC binding keeps AEC3's own estimates to itself, so they are measured here, from the
same 10 ms frames the processor feeds it:

- **delay**: the time from a sample being written to the speaker to its echo being read from the
  microphone. Both streams become 1 ms loudness envelopes on a common clock (the time each
  period was written / read) and the lag of their best correlation, over the last few seconds,
  is the delay; it is reported only when the correlation is clear (the far end has talked).
- **ERLE** (echo return loss enhancement): microphone level before processing over level after,
  accumulated over the frames where the far end was audible (time constant ~2 s). While both
  sides talk it includes the near-end voice, so it reads lower then.

All of it runs on the capture thread; the cost is a few small numpy operations per 10 ms and one
FFT correlation of a few thousand points per second.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EchoMeter"]

_SLOTS = 8192  # 1 ms slots: ~8 s of envelope history


def _envelope(frame: np.ndarray, channels: int, blocks: int = 10) -> np.ndarray:
    """RMS of each 1 ms of a 10 ms frame (channels averaged)."""
    x = frame.astype(np.float32)
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1)
    return np.array([math.sqrt(float(np.mean(np.square(p)))) for p in np.array_split(x, blocks)])


class _Envelope:
    """1 ms envelope values stamped with their absolute millisecond, in a ring."""

    def __init__(self) -> None:
        self.values = np.zeros(_SLOTS, dtype=np.float32)
        self.stamps = np.full(_SLOTS, -1, dtype=np.int64)

    def put(self, env: np.ndarray, first_ms: int) -> None:
        ms = first_ms + np.arange(env.size, dtype=np.int64)
        self.values[ms % _SLOTS] = env
        self.stamps[ms % _SLOTS] = ms

    def window(self, end_ms: int, length: int) -> np.ndarray:
        ms = np.arange(end_ms - length, end_ms, dtype=np.int64)
        slots = ms % _SLOTS
        return np.where(self.stamps[slots] == ms, self.values[slots], 0.0).astype(np.float64)


class EchoMeter:
    def __init__(
        self,
        *,
        window_ms: int = 4000,
        max_delay_ms: int = 600,
        every_ms: int = 1000,
        min_correlation: float = 0.3,
        far_end_floor: float = 32768 * 10 ** (-50 / 20),
        erle_seconds: float = 2.0,
    ) -> None:
        if window_ms + max_delay_ms > _SLOTS:
            raise ValueError("window_ms + max_delay_ms exceed the envelope history")
        self._window = window_ms
        self._max_delay = max_delay_ms
        self._every = every_ms
        self._min_corr = min_correlation
        self._floor = far_end_floor
        self._decay = math.exp(-0.010 / erle_seconds)
        self._ref = _Envelope()
        self._cap = _Envelope()
        self._next_estimate_ms: int | None = None
        self._far_until_ms = -1
        self._e_in = 0.0
        self._e_out = 0.0
        self.delay_ms: float | None = None
        self.correlation: float | None = None
        self.erle_db: float | None = None

    def note_reference(self, frame: np.ndarray, channels: int, end_ms: int) -> None:
        """A 10 ms frame of what the speaker played; its last sample was written at ``end_ms``."""
        env = _envelope(frame, channels)
        self._ref.put(env, end_ms - env.size)
        if float(env.max()) > self._floor:
            self._far_until_ms = end_ms + self._max_delay

    def note_capture(self, raw: np.ndarray, processed: np.ndarray, end_ms: int) -> None:
        """A 10 ms microphone frame before and after processing, read at ``end_ms``."""
        env = _envelope(raw, 1)
        self._cap.put(env, end_ms - env.size)
        if end_ms <= self._far_until_ms:
            self._e_in = self._e_in * self._decay + float(np.sum(np.square(raw, dtype=np.float64)))
            self._e_out = self._e_out * self._decay + float(
                np.sum(np.square(processed, dtype=np.float64))
            )
            if self._e_in > 0:
                self.erle_db = round(10 * math.log10(self._e_in / max(self._e_out, 1.0)), 1)
        if self._next_estimate_ms is None:
            self._next_estimate_ms = end_ms + self._window
        elif end_ms >= self._next_estimate_ms:
            self._next_estimate_ms = end_ms + self._every
            self._estimate(end_ms)

    def _estimate(self, now_ms: int) -> None:
        cap = self._cap.window(now_ms, self._window)
        ref = self._ref.window(now_ms, self._window + self._max_delay)
        cap = cap - cap.mean()
        ref = ref - ref.mean()
        if not cap.any() or not ref.any():
            return
        size = 1 << (cap.size + ref.size).bit_length()
        # corr[lag] = sum_m cap[m] * ref[m + max_delay - lag]: cap at time t vs ref at t - lag
        spectrum = np.fft.rfft(cap[::-1], size) * np.fft.rfft(ref, size)
        full = np.fft.irfft(spectrum, size)
        # index k of full = sum_m cap_rev[.]*ref[.] aligned so that k = (cap.size - 1) + shift
        shifts = np.arange(0, self._max_delay + 1)
        corr = full[cap.size - 1 + self._max_delay - shifts]
        norm = math.sqrt(float(np.sum(cap * cap))) * math.sqrt(
            float(np.sum(np.square(ref[self._max_delay :])))
        )
        if norm <= 0:
            return
        best = int(np.argmax(corr))
        peak = float(corr[best]) / norm
        self.correlation = round(peak, 2)
        if peak >= self._min_corr:
            self.delay_ms = float(shifts[best])

    def as_dict(self) -> dict[str, float | None]:
        return {
            "delay_ms": self.delay_ms,
            "delay_correlation": self.correlation,
            "erle_db": self.erle_db,
        }

    def __repr__(self) -> str:
        return f"EchoMeter(delay_ms={self.delay_ms}, erle_db={self.erle_db})"
