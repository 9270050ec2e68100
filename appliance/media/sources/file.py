"""The ``file`` source: replays an H.264 elementary stream (Annex-B) in real time, looping.

No encoding at all, which makes it the benchmark's passthrough sender. A file cannot make a
keyframe on demand, so a keyframe request replays from the start of the current group of pictures
(the last IDR): the picture jumps back a little and every decoder recovers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from appliance.clock import Clock
from appliance.errors import HardwareError
from appliance.media.annexb import NAL_IDR, ParameterSets, access_units, nal_types
from appliance.media.sources.base import VIDEO_TIME_BASE, EncodedFrame, VideoSource

logger = logging.getLogger(__name__)


def load_access_units(path: Path) -> list[tuple[bytes, bool]]:
    """(access unit, keyframe) pairs; every IDR carries SPS/PPS (joiners start from any IDR)."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise HardwareError(f"cannot read H.264 file {path}: {err.strerror or err}") from err
    units: list[tuple[bytes, bool]] = []
    parameter_sets = ParameterSets()
    for unit in access_units(data):
        units.append((parameter_sets.complete(unit), NAL_IDR in nal_types(unit)))
    if not any(key for _, key in units):
        raise HardwareError(
            f"{path} holds no H.264 keyframe (expected an Annex-B elementary stream)"
        )
    return units


class FileSource(VideoSource):
    kind = "file"

    def __init__(
        self,
        path: Path | str,
        *,
        width: int = 1280,
        height: int = 720,
        framerate: float = 30.0,
        bitrate: int = 2_000_000,
        loop: bool = True,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(
            width=width, height=height, framerate=framerate, bitrate=bitrate, clock=clock
        )
        self.path = Path(path)
        self.loop = loop
        self._units: list[tuple[bytes, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._rewind = False
        self.position = 0

    async def _start(self) -> None:
        self._units = await asyncio.to_thread(load_access_units, self.path)
        self.position = next(i for i, (_, key) in enumerate(self._units) if key)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _request_keyframe(self) -> None:
        self._rewind = True

    def _gop_start(self, index: int) -> int:
        while index > 0 and not self._units[index][1]:
            index -= 1
        return index

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.framerate
        start = loop.time()
        sent = 0
        while True:
            if self._rewind:
                self._rewind = False
                self.position = self._gop_start(self.position)
            if self.position >= len(self._units):
                if not self.loop:
                    logger.info("%r reached the end of %s", self, self.path)
                    return
                self.position = 0
            data, keyframe = self._units[self.position]
            self.position += 1
            pts = round(sent * period * VIDEO_TIME_BASE.denominator)
            self._deliver(EncodedFrame(data, pts, VIDEO_TIME_BASE, keyframe, self.clock.time()))
            sent += 1
            delay = start + sent * period - loop.time()
            if delay < -1.0:
                start = loop.time() - sent * period  # fell far behind: do not burst to catch up
            await asyncio.sleep(max(0.0, delay))
