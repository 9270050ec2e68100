"""The ALSA seam: a small PCM protocol, its pyalsaaudio adapter and an xrun-injecting wrapper.

This is the only module that imports :mod:`alsaaudio` (pyalsaaudio 0.11). Its behaviour, read
from the 0.11 C source rather than the older docs:

- ``PCM.read()`` returns ``(frames, data)``; on an overrun it returns ``(-EPIPE, b"")`` after it
  has already re-prepared the stream, so the next read works again.
- ``PCM.write(data)`` returns the number of *frames* written; on an underrun it returns
  ``-EPIPE`` (the data was not played) after re-preparing the stream.
- Any other failure raises ``alsaaudio.ALSAAudioError``; we re-raise it as
  :class:`~appliance.errors.AudioDeviceError`.

alsa-lib's ``file`` and ``null`` plugins have no clock: they read and write as fast as asked.
Pacing therefore lives in :mod:`appliance.media.audio.pacer`, never here.
"""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.errors import AudioDeviceError

__all__ = [
    "EPIPE",
    "PCM",
    "AlsaPcm",
    "PcmFormat",
    "XrunInjectingPcm",
    "open_capture",
    "open_playback",
]

logger = logging.getLogger(__name__)

EPIPE = errno.EPIPE
SAMPLE_BYTES = 2  # S16_LE, the only sample format we use


@dataclass(frozen=True)
class PcmFormat:
    """Interleaved signed 16-bit little-endian audio, cut into fixed periods."""

    rate: int = 48000
    channels: int = 1
    period_frames: int = 960
    periods: int = 4

    @property
    def frame_bytes(self) -> int:
        return SAMPLE_BYTES * self.channels

    @property
    def period_bytes(self) -> int:
        return self.period_frames * self.frame_bytes

    @property
    def period_seconds(self) -> float:
        return self.period_frames / self.rate

    @classmethod
    def for_period(
        cls, *, rate: int = 48000, channels: int = 1, period_ms: int = 20, periods: int = 4
    ) -> PcmFormat:
        return cls(
            rate=rate, channels=channels, period_frames=rate * period_ms // 1000, periods=periods
        )


class PCM(Protocol):
    """What capture and playback need from a PCM device (pyalsaaudio 0.11 semantics)."""

    @property
    def name(self) -> str: ...

    @property
    def format(self) -> PcmFormat: ...

    def read(self) -> tuple[int, bytes]:
        """One period: ``(frames, data)``; ``(-EPIPE, b"")`` after an overrun."""

    def write(self, data: bytes) -> int:
        """Frames written, or ``-EPIPE`` after an underrun (the data was dropped)."""

    def close(self) -> None: ...


class AlsaPcm:
    """A pyalsaaudio PCM opened with our format; ALSA errors become :class:`AudioDeviceError`."""

    def __init__(self, device: str, fmt: PcmFormat, *, capture: bool) -> None:
        try:
            import alsaaudio  # the only import of alsaaudio in the package
        except ImportError as err:  # libasound missing: no audio, but the appliance still runs
            raise AudioDeviceError(f"ALSA is not available (pyalsaaudio): {err}") from err
        self._alsa: Any = alsaaudio
        self._device = device
        self._format = fmt
        self._capture = capture
        kind = "capture" if capture else "playback"
        try:
            self._pcm: Any = alsaaudio.PCM(
                type=alsaaudio.PCM_CAPTURE if capture else alsaaudio.PCM_PLAYBACK,
                mode=alsaaudio.PCM_NORMAL,
                device=device,
                rate=fmt.rate,
                channels=fmt.channels,
                format=alsaaudio.PCM_FORMAT_S16_LE,
                periodsize=fmt.period_frames,
                periods=fmt.periods,
            )
        except alsaaudio.ALSAAudioError as err:
            raise AudioDeviceError(
                f"cannot open ALSA {kind} device {device!r}: {err}"
                " (check the device name with `arecord -L` / `aplay -L`)"
            ) from err
        self._closed = False
        self._check_negotiated(kind)
        logger.info("AlsaPcm(%s) opened for %s: %s", device, kind, fmt)

    def _check_negotiated(self, kind: str) -> None:
        info = self._pcm.info()
        got = (info.get("rate"), info.get("channels"), info.get("period_size"))
        want = (self._format.rate, self._format.channels, self._format.period_frames)
        if got != want:
            self._pcm.close()
            self._closed = True
            raise AudioDeviceError(
                f"ALSA {kind} device {self._device!r} gave rate/channels/period {got},"
                f" wanted {want} (use a plughw: or default device, which convert formats)"
            )

    @property
    def name(self) -> str:
        return self._device

    @property
    def format(self) -> PcmFormat:
        return self._format

    def read(self) -> tuple[int, bytes]:
        try:
            frames, data = self._pcm.read()
        except self._alsa.ALSAAudioError as err:
            raise AudioDeviceError(f"ALSA capture {self._device!r} failed: {err}") from err
        return int(frames), bytes(data)

    def write(self, data: bytes) -> int:
        try:
            return int(self._pcm.write(data))
        except self._alsa.ALSAAudioError as err:
            raise AudioDeviceError(f"ALSA playback {self._device!r} failed: {err}") from err

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pcm.close()
        logger.info("AlsaPcm(%s) closed", self._device)

    def __repr__(self) -> str:
        kind = "capture" if self._capture else "playback"
        state = "closed" if self._closed else "open"
        return f"AlsaPcm({self._device!r}, {kind}, {state})"


def open_capture(device: str, fmt: PcmFormat | None = None) -> AlsaPcm:
    return AlsaPcm(device, fmt or PcmFormat(), capture=True)


def open_playback(device: str, fmt: PcmFormat | None = None) -> AlsaPcm:
    return AlsaPcm(device, fmt or PcmFormat(), capture=False)


class XrunInjectingPcm:
    """Wraps a PCM and makes chosen calls fail the way pyalsaaudio reports an xrun.

    ``every=N`` fails every N-th read/write; :meth:`inject` queues failures for the next calls.
    A failed read returns ``(-EPIPE, b"")`` and a failed write returns ``-EPIPE`` without
    passing the data on: exactly what an overrun or underrun does to the data.
    """

    def __init__(self, inner: PCM, *, every: int = 0) -> None:
        self._inner = inner
        self._every = every
        self._calls = 0
        self._pending = 0
        self._lock = threading.Lock()
        self.injected = 0

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def format(self) -> PcmFormat:
        return self._inner.format

    def inject(self, count: int = 1) -> None:
        with self._lock:
            self._pending += count

    def _should_fail(self) -> bool:
        with self._lock:
            self._calls += 1
            fail = self._pending > 0 or (self._every > 0 and self._calls % self._every == 0)
            if self._pending > 0:
                self._pending -= 1
            if fail:
                self.injected += 1
            return fail

    def read(self) -> tuple[int, bytes]:
        if self._should_fail():
            return -EPIPE, b""
        return self._inner.read()

    def write(self, data: bytes) -> int:
        if self._should_fail():
            return -EPIPE
        return self._inner.write(data)

    def close(self) -> None:
        self._inner.close()

    def __repr__(self) -> str:
        return f"XrunInjectingPcm({self._inner!r}, injected={self.injected})"
