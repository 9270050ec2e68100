"""H.264 Annex-B byte streams: NAL units, access units and keyframe detection.

Passthrough never decodes video, but it must know where one picture ends (aiortc wants one access
unit per ``av.Packet``) and which pictures a decoder can start from (IDR).
"""

from __future__ import annotations

from collections.abc import Iterator

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9

START_CODE = b"\x00\x00\x00\x01"


def nal_units(data: bytes) -> Iterator[bytes]:
    """Yield the NAL units of an Annex-B buffer, without their start codes."""
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        start = i + 3
        nxt = data.find(b"\x00\x00\x01", start)
        if nxt == -1:
            yield data[start:]
            return
        end = nxt - 1 if data[nxt - 1] == 0 else nxt
        # A zero byte before a start code belongs to the next (4-byte) start code.
        while end > start and data[end - 1] == 0:
            end -= 1
        yield data[start:end]
        i = nxt


def nal_type(nal: bytes) -> int:
    return nal[0] & 0x1F if nal else 0


def nal_types(data: bytes) -> list[int]:
    return [nal_type(n) for n in nal_units(data)]


def is_keyframe(data: bytes) -> bool:
    """True when the access unit holds an IDR slice (a decoder can start here)."""
    return NAL_IDR in nal_types(data)


def _starts_picture(nal: bytes) -> bool:
    # first_mb_in_slice is ue(v); the value 0 is coded as a single '1' bit.
    return len(nal) > 1 and bool(nal[1] & 0x80)


def access_units(data: bytes) -> Iterator[bytes]:
    """Split an Annex-B elementary stream into access units (one picture each, with its headers)."""
    current: list[bytes] = []
    seen_vcl = False
    for nal in nal_units(data):
        if not nal:
            continue
        kind = nal_type(nal)
        vcl = kind in (NAL_SLICE, NAL_IDR)
        boundary = seen_vcl and (
            kind in (NAL_AUD, NAL_SPS, NAL_PPS, NAL_SEI) or (vcl and _starts_picture(nal))
        )
        if boundary:
            yield b"".join(START_CODE + n for n in current)
            current = []
            seen_vcl = False
        current.append(nal)
        seen_vcl = seen_vcl or vcl
    if current and seen_vcl:
        yield b"".join(START_CODE + n for n in current)


class ParameterSets:
    """Puts the latest SPS/PPS in front of every IDR that comes without them.

    A joiner can only start decoding at an IDR that carries them; some encoders (the Pi 4's V4L2
    M2M encoder through FFmpeg, whose "repeat sequence header" is off by default) emit them once.
    """

    def __init__(self, extradata: bytes | None = None) -> None:
        self._sps: bytes | None = None
        self._pps: bytes | None = None
        if extradata:
            self._remember(list(nal_units(extradata)))

    def _remember(self, nals: list[bytes]) -> None:
        for nal in nals:
            kind = nal_type(nal)
            if kind == NAL_SPS:
                self._sps = nal
            elif kind == NAL_PPS:
                self._pps = nal

    def complete(self, unit: bytes) -> bytes:
        nals = list(nal_units(unit))
        self._remember(nals)
        kinds = {nal_type(n) for n in nals}
        if NAL_IDR not in kinds or (NAL_SPS in kinds and NAL_PPS in kinds):
            return unit
        if self._sps is None or self._pps is None:
            return unit
        return START_CODE + self._sps + START_CODE + self._pps + unit
