"""Software/V4L2-M2M H.264 encoding through PyAV, for the sources that capture raw pictures.

Output is what passthrough needs: Annex-B, constrained baseline, SPS/PPS in front of every IDR, no
B-frames, one access unit per picture, forced keyframes as IDR.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import cast

import av

from appliance.errors import MediaError
from appliance.media.annexb import ParameterSets, is_keyframe

logger = logging.getLogger(__name__)

VBV_SECONDS = 0.25
"""libx264's rate-control buffer, in seconds of the bitrate: bounds the size of any one picture."""


def available_codecs() -> set[str]:
    return set(av.codecs_available)


def choose_codec(preferred: tuple[str, ...] = ("h264_v4l2m2m", "libx264")) -> str:
    """The first H.264 encoder of ``preferred`` that this PyAV build has."""
    have = available_codecs()
    for name in preferred:
        if name in have:
            return name
    raise MediaError(f"no H.264 encoder available (wanted one of {', '.join(preferred)})")


class H264Encoder:
    """One PyAV encoder context; ``encode()`` is called from one worker thread only."""

    def __init__(
        self,
        width: int,
        height: int,
        framerate: float,
        bitrate: int,
        *,
        codec: str = "libx264",
        keyframe_interval: float = 2.0,
    ) -> None:
        self.codec_name = codec
        self.bitrate = bitrate
        try:
            ctx = cast(av.VideoCodecContext, av.CodecContext.create(codec, "w"))
        except (av.FFmpegError, ValueError) as err:
            raise MediaError(f"cannot create H.264 encoder {codec!r}: {err}") from err
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.bit_rate = bitrate
        ctx.framerate = Fraction(round(framerate * 1000), 1000)
        ctx.time_base = Fraction(1, 90000)
        ctx.gop_size = max(1, round(framerate * keyframe_interval))
        ctx.max_b_frames = 0
        if codec == "libx264":
            kbps = max(1, bitrate // 1000)
            ctx.profile = "Baseline"
            ctx.options = {
                "preset": "ultrafast",
                "tune": "zerolatency",
                "level": "31",
                "forced-idr": "1",
                # VBV: no access unit much larger than VBV_SECONDS of the bitrate (an IDR
                # otherwise overflows a thin uplink's queue on its own and is lost).
                "x264-params": (
                    "scenecut=0:repeat-headers=1:aud=0"
                    f":vbv-maxrate={kbps}:vbv-bufsize={max(1, round(kbps * VBV_SECONDS))}"
                ),
            }
        try:
            ctx.open()
        except av.FFmpegError as err:
            raise MediaError(f"cannot open H.264 encoder {codec!r}: {err}") from err
        self._ctx = ctx
        # h264_v4l2m2m may send SPS/PPS only once (or only in extradata): every IDR gets them.
        self._parameter_sets = ParameterSets(ctx.extradata)
        self.frames = 0

    def encode(self, frame: av.VideoFrame, pts: int, force_keyframe: bool) -> list[bytes]:
        """Encode one picture; returns the access units produced (usually exactly one)."""
        frame.pts = pts
        frame.time_base = Fraction(1, 90000)
        frame.pict_type = (
            av.video.frame.PictureType.I if force_keyframe else av.video.frame.PictureType.NONE
        )
        units = [self._parameter_sets.complete(bytes(p)) for p in self._ctx.encode(frame)]
        self.frames += 1
        return units

    def close(self) -> None:
        try:
            for _ in self._ctx.encode(None):
                pass
        except av.FFmpegError:
            pass

    @staticmethod
    def keyframe(unit: bytes) -> bool:
        return is_keyframe(unit)

    def __repr__(self) -> str:
        return f"H264Encoder({self.codec_name}, {self._ctx.width}x{self._ctx.height})"
