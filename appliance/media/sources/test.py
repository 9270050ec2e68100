"""The ``test`` source: a synthetic pattern carrying a frame counter and its capture time.

libx264 (baseline, zerolatency) encodes it on a named worker thread, paced in real time like a
camera; packets go to the loop with ``call_soon_threadsafe``. It is the laptop and CI camera.
"""

from __future__ import annotations

import logging
import threading
import time

from appliance.clock import Clock
from appliance.media.sources.base import VIDEO_TIME_BASE, EncodedFrame, VideoSource
from appliance.media.sources.encoder import H264Encoder
from appliance.media.sources.pattern import TestPattern

logger = logging.getLogger(__name__)


class TestSource(VideoSource):
    kind = "test"
    adjustable = frozenset({"bitrate"})
    __test__ = False  # not a pytest class

    def __init__(
        self,
        *,
        width: int = 320,
        height: int = 240,
        framerate: float = 15.0,
        bitrate: int = 500_000,
        keyframe_interval: float = 2.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            width=width, height=height, framerate=framerate, bitrate=bitrate, clock=clock
        )
        self.keyframe_interval = keyframe_interval
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._force_keyframe = threading.Event()
        self.counter = 0

    async def _start(self) -> None:
        self._stopping.clear()
        # Built here so a bad size or a missing codec fails start(), not the thread.
        encoder = self._encoder()
        pattern = TestPattern(self.width, self.height)
        self._thread = threading.Thread(
            target=self._run, args=(encoder, pattern), name="video-test-encoder", daemon=True
        )
        self._thread.start()

    async def _stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # The thread wakes at least once a frame period, so this join is short.
            thread.join(timeout=2.0)

    def _request_keyframe(self) -> None:
        self._force_keyframe.set()

    def _encoder(self) -> H264Encoder:
        return H264Encoder(
            self.width,
            self.height,
            self.framerate,
            self.bitrate,
            keyframe_interval=self.keyframe_interval,
        )

    def _run(self, encoder: H264Encoder, pattern: TestPattern) -> None:
        period = 1.0 / self.framerate
        start = time.monotonic()
        next_due = start
        try:
            while not self._stopping.is_set():
                delay = next_due - time.monotonic()
                if delay > 0 and self._stopping.wait(delay):
                    break
                next_due += period
                if next_due < time.monotonic() - period:
                    # Fell behind (a loaded machine): skip, a camera drops frames too.
                    next_due = time.monotonic() + period
                capture_time = self.clock.time()
                pts = round((time.monotonic() - start) * VIDEO_TIME_BASE.denominator)
                frame = pattern.frame(self.counter, capture_time)
                self.counter += 1
                force = self._force_keyframe.is_set()
                self._force_keyframe.clear()
                if encoder.bitrate != self.bitrate:
                    # libx264 through PyAV ignores a new bit_rate once open: a new encoder.
                    encoder.close()
                    encoder = self._encoder()
                    force = True
                for unit in encoder.encode(frame, pts, force):
                    self._deliver_threadsafe(
                        EncodedFrame(
                            data=unit,
                            pts=pts,
                            time_base=VIDEO_TIME_BASE,
                            keyframe=H264Encoder.keyframe(unit),
                            capture_time=capture_time,
                        )
                    )
        except Exception:
            logger.exception("%r encoder thread failed", self)
        finally:
            encoder.close()
