"""The ``picamera2`` source: the Raspberry Pi camera with the board's hardware H.264 encoder.

picamera2 is imported here and nowhere else (it only imports on Raspberry Pi OS). Its encoder is
set up for passthrough: constrained baseline, ``repeat=True`` (SPS/PPS before every IDR), a short
``iperiod``, and ``force_key_frame()`` for the peers' keyframe requests. Our :class:`Output`
subclass's ``outputframe`` runs on picamera2's encoder thread and only hands each packet to the
loop. A Pi 5 has no hardware H.264 encoder: picamera2 then encodes with libav in software, which
costs a large share of the CPU; the log says so when the source starts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from appliance.clock import Clock
from appliance.errors import HardwareError
from appliance.media.annexb import ParameterSets
from appliance.media.sources.base import VIDEO_TIME_BASE, EncodedFrame, VideoSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Picamera2Modules:
    """What the adapter uses from picamera2 (tests hand in stand-ins checked against its source)."""

    Picamera2: Any
    H264Encoder: Any
    Output: Any
    hardware_encoder: bool


def load_picamera2() -> Picamera2Modules:
    try:
        from picamera2 import Picamera2
        from picamera2.encoders import H264Encoder
        from picamera2.outputs import Output
        from picamera2.platform import Platform, get_platform
    except ImportError as err:
        raise HardwareError(
            "picamera2 is not installed (it exists on Raspberry Pi OS: apt install python3-picamera2)"
        ) from err
    return Picamera2Modules(Picamera2, H264Encoder, Output, get_platform() == Platform.VC4)


def _make_output(base: type, source: Picamera2Source) -> Any:
    class LoopOutput(base):  # type: ignore[misc, valid-type]
        def outputframe(
            self,
            frame: Any,
            keyframe: bool = True,
            timestamp: int | None = None,
            packet: Any = None,
            audio: bool = False,
        ) -> None:
            if audio or frame is None:
                return
            source._encoded(bytes(frame), bool(keyframe), timestamp)

    return LoopOutput()


class Picamera2Source(VideoSource):
    kind = "picamera2"
    # picamera2's H264Encoder takes its bitrate once: V4L2Encoder hands it to the encoder as
    # V4L2_CID_MPEG_VIDEO_BITRATE among the controls it sets when recording starts, and has no call
    # to change it while running. Lowering it would mean stopping and restarting the recording
    # (or setting the V4L2 control on the encoder's device ourselves); neither is done or tested
    # here (no camera on this machine), so the source says it cannot change its bitrate.
    adjustable: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        width: int = 1280,
        height: int = 720,
        framerate: float = 30.0,
        bitrate: int = 2_000_000,
        iperiod: int | None = None,
        camera_num: int = 0,
        modules: Picamera2Modules | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            width=width, height=height, framerate=framerate, bitrate=bitrate, clock=clock
        )
        self.iperiod = iperiod or max(1, round(framerate))  # an IDR every second
        self.camera_num = camera_num
        self._modules = modules
        self._camera: Any = None
        self._encoder: Any = None
        self._first_timestamp: int | None = None
        self._parameter_sets = ParameterSets()

    async def _start(self) -> None:
        modules = self._modules or load_picamera2()
        if modules.hardware_encoder:
            profile = "constrained baseline"
        else:
            profile = "baseline"
            logger.warning(
                "%r: this board (Raspberry Pi 5) has no hardware H.264 encoder; picamera2 encodes "
                "in software with libav, which takes a large share of the CPU",
                self,
            )
        await asyncio.to_thread(self._open, modules, profile)

    def _open(self, modules: Picamera2Modules, profile: str) -> None:
        try:
            camera = modules.Picamera2(self.camera_num)
        except (RuntimeError, IndexError) as err:
            raise HardwareError(f"camera {self.camera_num} could not be opened: {err}") from err
        try:
            config = camera.create_video_configuration(
                main={"size": (self.width, self.height), "format": "YUV420"},
                controls={"FrameRate": float(self.framerate)},
            )
            camera.configure(config)
            encoder = modules.H264Encoder(
                bitrate=self.bitrate, repeat=True, iperiod=self.iperiod, profile=profile
            )
            camera.start_encoder(encoder, _make_output(modules.Output, self))
            camera.start()
        except Exception as err:
            camera.close()
            raise HardwareError(f"camera {self.camera_num} could not start: {err}") from err
        self._camera, self._encoder = camera, encoder

    async def _stop(self) -> None:
        camera, self._camera = self._camera, None
        self._encoder = None
        if camera is not None:
            await asyncio.to_thread(self._close, camera)

    @staticmethod
    def _close(camera: Any) -> None:
        try:
            camera.stop_encoder()
            camera.stop()
        finally:
            camera.close()

    def _request_keyframe(self) -> None:
        if self._encoder is not None:
            self._encoder.force_key_frame()

    def _encoded(self, data: bytes, keyframe: bool, timestamp_us: int | None) -> None:
        """On picamera2's encoder thread: only hand the packet to the loop."""
        if timestamp_us is None:
            timestamp_us = 0
        if self._first_timestamp is None:
            self._first_timestamp = timestamp_us
        pts = (timestamp_us - self._first_timestamp) * VIDEO_TIME_BASE.denominator // 1_000_000
        data = self._parameter_sets.complete(data)
        self._deliver_threadsafe(
            EncodedFrame(data, pts, VIDEO_TIME_BASE, keyframe, self.clock.time())
        )


def describe_cameras(modules: Picamera2Modules | None = None) -> tuple[list[str], bool]:
    """The attached cameras' models (``Picamera2.global_camera_info()``, which opens none of
    them) and whether the board has the hardware H.264 encoder (not on a Pi 5)."""
    modules = modules or load_picamera2()
    cameras = [
        str(info.get("Model", info.get("Id", "camera")))
        for info in modules.Picamera2.global_camera_info()
    ]
    return cameras, modules.hardware_encoder
