"""The seam to WebRTC's audio processing module (AEC3, noise suppression, high-pass, AGC).

This is the only module that imports the binding, livekit's ``livekit.rtc.AudioProcessingModule``
(livekit 1.2; the choice among the Python bindings is explained in the README). It is a heavy
native library (the whole of libwebrtc, ~40 MB resident, a few native threads), so it is loaded
only when a device actually opens audio processing, never on ``import appliance``. Boards without
a wheel (32-bit ARM) do not install it; opening processing there raises
:class:`~appliance.errors.AudioProcessingUnavailable` and the daemon runs without it.

What the binding does, read from its source: ``process_stream`` / ``process_reverse_stream`` take
exactly 10 ms of interleaved S16 in a ``livekit.rtc.AudioFrame`` and modify it in place (the
reverse stream's output is unused); each call is one synchronous request into the native
library. It exposes neither AEC3's delay estimate nor its ERLE, so those are measured by
:mod:`appliance.media.audio.echometer`.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np

from appliance.errors import AudioProcessingUnavailable

__all__ = ["Apm", "LivekitApm", "open_apm"]

logger = logging.getLogger(__name__)


class Apm(Protocol):
    """One APM instance: 10 ms frames of interleaved int16 in, processed capture frames out."""

    def process_reverse(self, frame: np.ndarray, rate: int, channels: int) -> None:
        """Analyse 10 ms of what the speaker played (the far-end reference)."""

    def process(self, frame: np.ndarray, rate: int) -> np.ndarray:
        """10 ms of mono microphone audio → the same, processed."""

    def set_stream_delay_ms(self, delay_ms: int) -> None: ...

    def close(self) -> None: ...


class LivekitApm:
    """``livekit.rtc.AudioProcessingModule`` behind :class:`Apm`."""

    def __init__(
        self,
        *,
        echo_cancellation: bool,
        noise_suppression: bool,
        high_pass: bool,
        auto_gain: bool,
    ) -> None:
        try:
            from livekit import rtc  # the only import of the binding in the package
        except ImportError as err:
            raise AudioProcessingUnavailable(
                f"WebRTC audio processing is not installed (livekit): {err}"
            ) from err
        self._rtc: Any = rtc
        self.echo_cancellation = echo_cancellation
        try:
            self._apm: Any = rtc.AudioProcessingModule(
                echo_cancellation=echo_cancellation,
                noise_suppression=noise_suppression,
                high_pass_filter=high_pass,
                auto_gain_control=auto_gain,
            )
        except Exception as err:  # the native library failed to load or to start
            raise AudioProcessingUnavailable(f"WebRTC audio processing failed: {err}") from err
        self._closed = False
        logger.info(
            "LivekitApm opened (livekit %s): aec=%s ns=%s hpf=%s agc=%s",
            getattr(rtc, "__version__", "?"),
            echo_cancellation,
            noise_suppression,
            high_pass,
            auto_gain,
        )

    def _frame(self, frame: np.ndarray, rate: int, channels: int) -> Any:
        data = bytearray(np.ascontiguousarray(frame, dtype="<i2").tobytes())
        return self._rtc.AudioFrame(data, rate, channels, frame.size // channels)

    def process_reverse(self, frame: np.ndarray, rate: int, channels: int) -> None:
        try:
            self._apm.process_reverse_stream(self._frame(frame, rate, channels))
        except RuntimeError as err:
            raise AudioProcessingUnavailable(f"APM reverse stream failed: {err}") from err

    def process(self, frame: np.ndarray, rate: int) -> np.ndarray:
        audio = self._frame(frame, rate, 1)
        try:
            self._apm.process_stream(audio)
        except RuntimeError as err:
            raise AudioProcessingUnavailable(f"APM capture stream failed: {err}") from err
        return np.frombuffer(audio.data, dtype=np.int16).copy()

    def set_stream_delay_ms(self, delay_ms: int) -> None:
        if self.echo_cancellation:
            self._apm.set_stream_delay_ms(int(delay_ms))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._apm = None  # the binding frees the native instance with its last reference
        logger.info("LivekitApm closed")

    def __repr__(self) -> str:
        return f"LivekitApm(aec={self.echo_cancellation}, closed={self._closed})"


def open_apm(
    *, echo_cancellation: bool, noise_suppression: bool, high_pass: bool, auto_gain: bool
) -> LivekitApm:
    return LivekitApm(
        echo_cancellation=echo_cancellation,
        noise_suppression=noise_suppression,
        high_pass=high_pass,
        auto_gain=auto_gain,
    )
