"""Counters of the audio path, for ``appliance status`` and the tests.

Each counter is written by one thread only (the worker or the event loop) and read anywhere;
plain ints are enough for that in CPython.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["CaptureStats", "PlaybackStats"]


@dataclass
class CaptureStats:
    frames_captured: int = 0
    """Audio frames (samples per channel) read from the device and handed on."""
    periods: int = 0
    overruns: int = 0
    """Reads that reported ``-EPIPE``: the device lost data; the period was sent as silence."""
    short_reads: int = 0
    """Reads that returned less than a period (padded with silence)."""
    dropped: int = 0
    """Periods dropped because nobody consumed the track fast enough."""
    attenuated: int = 0
    """Periods the half-duplex gate turned down while the far end was talking."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class PlaybackStats:
    frames_played: int = 0
    """Audio frames (samples per channel) written to the device, silence included."""
    periods: int = 0
    frames_received: int = 0
    """Frames that arrived from remote tracks, after resampling to the device format."""
    underruns: int = 0
    """Writes that reported ``-EPIPE`` (the device ran dry); the period was written again."""
    dropped: int = 0
    """Periods dropped, oldest first, because a remote track's buffer was full."""
    trimmed: int = 0
    """Periods skipped to bring a remote track's buffer back to its target level (latency)."""
    starved: int = 0
    """Times a remote track's buffer ran dry (it then refills to its target level)."""
    concealed: int = 0
    """Gaps in a remote track's timestamps (lost packets) filled with silence."""
    sounds_played: int = 0
    """Chimes and ringtones started."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
