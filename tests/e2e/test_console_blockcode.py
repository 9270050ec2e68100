"""blockcode.js reads what appliance/media/sources/blockcode.py draws, after H.264 and in Chromium.

The pictures come from the ``test`` source's own pattern (``TestPattern``), are encoded with
libx264 into an MP4 in memory and played from a ``blob:`` URL, so the reader sees decoded frames
through ``requestVideoFrameCallback`` exactly as it does in a call.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator
from pathlib import Path

import av
import numpy as np
import pytest
import pytest_asyncio

from appliance.media.sources import blockcode
from appliance.media.sources.pattern import TestPattern
from tests.support.browser import PageGuard, guarded_browser
from tests.support.server import running_server

pytestmark = pytest.mark.e2e

FRAMES = 45
FPS = 15
T0 = 1_700_000_000.0


@pytest_asyncio.fixture
async def guard() -> AsyncIterator[PageGuard]:
    async with guarded_browser() as pages:
        yield pages


def h264_mp4() -> bytes:
    pattern = TestPattern(320, 240)
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "28"}
        for i in range(FRAMES):
            frame = pattern.frame(i, T0 + i / FPS)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


PLAY_JS = """
async (b64) => {
  const {FrameCodeReader} = await import('/blockcode.js');
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const video = document.createElement('video');
  video.muted = true;
  document.body.append(video);
  video.src = URL.createObjectURL(new Blob([bytes], {type: 'video/mp4'}));
  const reader = new FrameCodeReader(video);
  reader.start();
  const ended = new Promise((resolve) => (video.onended = resolve));
  await video.play();
  await ended;
  reader.stop();
  return {codes: reader.codes, seen: reader.framesSeen, unreadable: reader.unreadable};
}
"""

READ_RGBA_JS = """
async ([b64, width]) => {
  const {readRgba} = await import('/blockcode.js');
  const rgba = Uint8ClampedArray.from(atob(b64), (c) => c.charCodeAt(0));
  return readRgba(rgba, width);
}
"""


def _rgba(luma: np.ndarray) -> str:
    rgba = np.repeat(luma[:, :, None], 4, axis=2)
    rgba[:, :, 3] = 255
    return base64.b64encode(rgba.tobytes()).decode()


async def test_reader_matches_the_python_layout_and_rejects_damage(
    tmp_path: Path, guard: PageGuard
) -> None:
    async with running_server(tmp_path, test_pages=True) as srv:
        guard.allow(srv.base_url)
        page = await guard.new_page()
        await page.goto(f"{srv.base_url}/probe.html")
        luma = np.full((144, 128), 90, dtype=np.uint8)
        code = blockcode.BlockCode(0xDEADBEEF, 123456789)
        blockcode.draw(luma, code)
        got = await page.evaluate(READ_RGBA_JS, [_rgba(luma), 128])
        assert got == {"counter": 0xDEADBEEF, "timeMs": 123456789}
        luma[0:16, 0:16] = 255 - luma[0:16, 0:16]  # one flipped bit: the CRC catches it
        assert await page.evaluate(READ_RGBA_JS, [_rgba(luma), 128]) is None


async def test_reader_reads_counters_and_capture_times_from_decoded_h264(
    tmp_path: Path, guard: PageGuard
) -> None:
    movie = base64.b64encode(h264_mp4()).decode()
    async with running_server(tmp_path, test_pages=True) as srv:
        guard.allow(srv.base_url)
        page = await guard.new_page()
        await page.goto(f"{srv.base_url}/probe.html")
        result = await page.evaluate(PLAY_JS, movie)
    counters = [c["counter"] for c in result["codes"]]
    assert len(counters) >= FRAMES // 2, result
    assert counters == sorted(counters), counters
    assert len(set(counters)) >= FRAMES // 2, counters
    assert result["unreadable"] <= 1
    for c in result["codes"]:
        expected = int((T0 + c["counter"] / FPS) * 1000) & 0xFFFFFFFF
        assert c["timeMs"] == expected
