"""The ``v4l2`` source: a USB camera through PyAV, encoded by ``h264_v4l2m2m`` where the board
has it (Pi 0-4's hardware encoder as a memory-to-memory device), else libx264 ultrafast/zerolatency.

Capture and encoding run on a named worker thread; packets go to the loop with
``call_soon_threadsafe``. Without a camera on this machine only the pipeline selection and the
error paths are tested.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import av

from appliance.clock import Clock
from appliance.errors import HardwareError, MediaError
from appliance.media.sources.base import VIDEO_TIME_BASE, EncodedFrame, VideoSource
from appliance.media.sources.encoder import H264Encoder, choose_codec

logger = logging.getLogger(__name__)

HARDWARE_CODEC = "h264_v4l2m2m"
SOFTWARE_CODEC = "libx264"


def select_pipeline(available: set[str] | None = None) -> str:
    """The encoder the ``v4l2`` source will use: the hardware M2M encoder when present."""
    have = available if available is not None else set(av.codecs_available)
    if HARDWARE_CODEC in have:
        return HARDWARE_CODEC
    if SOFTWARE_CODEC in have:
        return SOFTWARE_CODEC
    raise MediaError("no H.264 encoder: neither h264_v4l2m2m nor libx264 is in this PyAV build")


class V4l2Source(VideoSource):
    kind = "v4l2"
    adjustable = frozenset({"bitrate"})

    def __init__(
        self,
        *,
        device: str = "/dev/video0",
        width: int = 640,
        height: int = 480,
        framerate: float = 15.0,
        bitrate: int = 1_000_000,
        input_format: str | None = None,
        codec: str | None = None,
        keyframe_interval: float = 2.0,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            width=width, height=height, framerate=framerate, bitrate=bitrate, clock=clock
        )
        self.device = device
        self.input_format = input_format
        self.codec = codec or select_pipeline()
        self.keyframe_interval = keyframe_interval
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._force_keyframe = threading.Event()
        self._container: Any = None

    def _open(self) -> Any:
        options = {"video_size": f"{self.width}x{self.height}", "framerate": f"{self.framerate:g}"}
        if self.input_format:
            options["input_format"] = self.input_format
        try:
            return av.open(self.device, format="video4linux2", options=options)
        except (av.FFmpegError, OSError) as err:
            raise HardwareError(
                f"camera {self.device} could not be opened: {err} "
                "(hint: is it plugged in, and is the user in the 'video' group?)"
            ) from err

    async def _start(self) -> None:
        self._stopping.clear()
        container = self._open()
        try:
            encoder = self._encoder()
        except MediaError:
            container.close()
            raise
        self._container = container
        self._thread = threading.Thread(
            target=self._run,
            args=(container, encoder),
            name=f"video-v4l2:{self.device}",
            daemon=True,
        )
        self._thread.start()
        logger.info("%r capturing from %s, encoding with %s", self, self.device, self.codec)

    def _encoder(self) -> H264Encoder:
        codec = choose_codec((self.codec, SOFTWARE_CODEC))
        if codec != self.codec:
            logger.warning("%r: %s unavailable, falling back to %s", self, self.codec, codec)
            self.codec = codec
        return H264Encoder(
            self.width,
            self.height,
            self.framerate,
            self.bitrate,
            codec=codec,
            keyframe_interval=self.keyframe_interval,
        )

    async def _stop(self) -> None:
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=3.0)
        if self._container is not None:
            self._container.close()
            self._container = None

    def _request_keyframe(self) -> None:
        self._force_keyframe.set()

    def _run(self, container: Any, encoder: H264Encoder) -> None:
        start = time.monotonic()
        try:
            for frame in container.decode(video=0):
                if self._stopping.is_set():
                    break
                capture_time = self.clock.time()
                picture = frame.reformat(width=self.width, height=self.height, format="yuv420p")
                pts = round((time.monotonic() - start) * VIDEO_TIME_BASE.denominator)
                force = self._force_keyframe.is_set()
                self._force_keyframe.clear()
                if encoder.bitrate != self.bitrate:
                    # The M2M/libx264 encoder keeps its open bitrate: a new one, from an IDR.
                    encoder.close()
                    encoder = self._encoder()
                    force = True
                for unit in encoder.encode(picture, pts, force):
                    self._deliver_threadsafe(
                        EncodedFrame(
                            unit, pts, VIDEO_TIME_BASE, H264Encoder.keyframe(unit), capture_time
                        )
                    )
        except Exception:
            if not self._stopping.is_set():
                logger.exception("%r capture thread failed", self)
        finally:
            encoder.close()
