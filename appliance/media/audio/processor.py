"""The microphone's audio processing: the far-end reference in, the processed microphone out.

The playback writer hands over every period it has written to the speaker — call audio and
chimes after mixing, volume and clipping, silence included, exactly the bytes the device took —
with the time of the write (:meth:`AudioProcessor.reference`). The capture reader hands over
every period it has read (:meth:`AudioProcessor.process`). Both are cut into 10 ms frames and fed
to the APM from the capture thread alone, in the order they happened: before each 10 ms of
microphone the reference frames written since are analysed, as WebRTC's own audio device module
does with its render queue. So one thread owns the APM, and a test with an injected clock feeds
it the same sequence every time.

Reference is collected only while a microphone stream runs (:meth:`start_stream` ..
:meth:`end_stream`): without a call nobody reads the microphone, and chimes must not pile up
stale reference for the next call. While it runs, frames wait in a bounded queue
(``max_reference_ms``) from which the oldest go, counted, if the microphone stalls.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from typing import Any

import numpy as np

from appliance.errors import AudioProcessingUnavailable
from appliance.media.audio.apm import Apm
from appliance.media.audio.echometer import EchoMeter
from appliance.media.audio.pcm import PcmFormat

__all__ = ["AudioProcessor"]

logger = logging.getLogger(__name__)


class AudioProcessor:
    """Feeds ``apm`` from the speaker path and the microphone path; see the module docstring.

    ``capture`` is the microphone's format (48 kHz mono); the reference may be at any rate and
    channel count whose 10 ms is a whole number of frames.
    """

    def __init__(
        self,
        apm: Apm,
        capture: PcmFormat,
        *,
        features: dict[str, bool] | None = None,
        reference: bool = True,
        max_reference_ms: int = 500,
        stream_delay_ms: int = 0,
    ) -> None:
        if (
            capture.channels != 1
            or capture.rate % 100
            or capture.period_frames % (capture.rate // 100)
        ):
            raise ValueError(f"capture must be mono in whole 10 ms frames, got {capture}")
        self._apm = apm
        self._capture = capture
        self._frame = capture.rate // 100
        self.features = dict(features or {})
        self._wants_reference = reference
        self._streaming = False
        self._queue: deque[tuple[np.ndarray, int, int, int]] = deque(
            maxlen=max(1, max_reference_ms // 10)
        )
        self._lock = threading.Lock()
        self._stream_delay_ms = stream_delay_ms
        self.meter = EchoMeter()
        self.reference_frames = 0
        self.reference_dropped = 0
        self.capture_frames = 0
        self.error: str | None = None

    # -- speaker side (playback writer thread) --------------------------------------------

    def reference(self, data: bytes, fmt: PcmFormat, written_at: float) -> None:
        """One period the speaker took, written (the write returned) at ``written_at``."""
        if not (self._wants_reference and self._streaming):
            return
        per_frame = fmt.rate // 100 * fmt.channels
        samples = np.frombuffer(data, dtype="<i2")
        frames = samples.size // per_frame
        end_ms = round(written_at * 1000)
        with self._lock:
            for i in range(frames):
                frame = samples[i * per_frame : (i + 1) * per_frame]
                if len(self._queue) == self._queue.maxlen:
                    self.reference_dropped += 1
                self._queue.append((frame, fmt.rate, fmt.channels, end_ms - 10 * (frames - 1 - i)))

    # -- microphone side (capture reader thread) ------------------------------------------

    def start_stream(self) -> None:
        """A microphone stream (a call) begins: collect the reference from now on."""
        with self._lock:
            self._queue.clear()
            self._streaming = True

    def end_stream(self) -> None:
        """The microphone stopped: nobody will consume reference until the next stream."""
        with self._lock:
            self._streaming = False
            self._queue.clear()

    def process(self, data: bytes, read_at: float) -> bytes:
        """One microphone period read at ``read_at`` → the processed period (same length).

        If the APM fails, the error is logged once and the microphone goes out unprocessed
        from then on: a call with echo beats a call without sound."""
        if self.error is not None:
            return data
        try:
            return self._process(data, read_at)
        except AudioProcessingUnavailable as err:
            self.error = str(err)
            logger.error("AudioProcessor failed, the microphone goes out unprocessed: %s", err)
            return data

    def _process(self, data: bytes, read_at: float) -> bytes:
        raw = np.frombuffer(data, dtype="<i2")
        frames = raw.size // self._frame
        out = np.empty_like(raw)
        end_ms = round(read_at * 1000)
        for i in range(frames):
            with self._lock:
                pending = len(self._queue)
                take = math.ceil(pending / (frames - i))
                batch = [self._queue.popleft() for _ in range(take)]
            for frame, rate, channels, ref_end_ms in batch:
                self._apm.process_reverse(frame, rate, channels)
                self.meter.note_reference(frame, channels, ref_end_ms)
                self.reference_frames += 1
            chunk = raw[i * self._frame : (i + 1) * self._frame]
            self._apm.set_stream_delay_ms(self._stream_delay_ms)
            processed = self._apm.process(chunk, self._capture.rate)
            out[i * self._frame : (i + 1) * self._frame] = processed
            self.meter.note_capture(chunk, processed, end_ms - 10 * (frames - 1 - i))
            self.capture_frames += 1
        return out.astype("<i2", copy=False).tobytes()

    def stats(self) -> dict[str, Any]:
        return {
            "state": "failed" if self.error else "on",
            **self.features,
            **self.meter.as_dict(),
            "reference_frames": self.reference_frames,
            "reference_dropped": self.reference_dropped,
            "capture_frames": self.capture_frames,
            "error": self.error,
        }

    def close(self) -> None:
        self._apm.close()

    def __repr__(self) -> str:
        return (
            f"AudioProcessor(reference={self.reference_frames}, capture={self.capture_frames},"
            f" {self.meter!r})"
        )
