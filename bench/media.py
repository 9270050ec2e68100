"""Media benchmark (issue #4): passthrough vs aiortc encoding, glass-to-glass, join to first
frame, recovery after a link drop, memory of a 1:1 call.

    .venv/bin/python bench/media.py [--seconds 15] [--joins 5] [--skip-netns]

* CPU: a sender *process* sends 720p30 ~2 Mbps H.264 to a receiver in this process, once through
  passthrough (the ``file`` source, ready packets) and once through aiortc's own encoder fed the
  same content as decoded frames; its CPU (utime+stime from /proc) over the window, in % of a core.
* Glass-to-glass: the ``test`` source (1280x720@30, 2 Mbps) draws its capture time into each
  picture; headless Chromium joins through call.js and reads it back in requestVideoFrameCallback.
* Join to first frame: a receive-only Chromium page calls ``join()`` while the appliance streams;
  the time until the first frame is shown. Without media permission (mDNS host candidates) and with.
* Link drop: two participants in network namespaces, the link down 10 s; time from link up to the
  next new frame at the receiver (ICE restart by the first offerer).
* RSS: the passthrough sender process during its 1:1 call.

Prints a table (median, p95) and, last, one JSON line of the same figures. Never gates CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from appliance.media.aiortc_compat import on_keyframe_request
from appliance.media.negotiation import negotiated_codec, prefer_h264
from appliance.media.passthrough import VideoFanout
from appliance.media.sources.encoder import H264Encoder
from appliance.media.sources.file import FileSource
from appliance.media.sources.pattern import TestPattern
from tests.support import poll
from tests.support.probejs import JOIN_JS

WIDTH, HEIGHT, FPS, BITRATE = 1280, 720, 30, 2_000_000
TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- the clip ---------------------------------------------------------------------------------


def make_clip(path: Path, seconds: float = 4.0) -> Path:
    """The test pattern at 720p30 ~2 Mbps as an H.264 elementary stream (encoded once, here)."""
    pattern = TestPattern(WIDTH, HEIGHT)
    encoder = H264Encoder(WIDTH, HEIGHT, FPS, BITRATE, keyframe_interval=2.0)
    with path.open("wb") as out:
        for i in range(round(seconds * FPS)):
            for unit in encoder.encode(pattern.frame(i, time.time()), i * 3000, False):
                out.write(unit)
    return path


# -- the sender process -----------------------------------------------------------------------


class FrameLoopTrack(MediaStreamTrack):
    """Already-decoded pictures of the clip, looped in real time: what aiortc's encoder gets."""

    kind = "video"

    def __init__(self, clip: Path, frames: int = 60) -> None:
        super().__init__()
        self._frames: list[av.VideoFrame] = []
        with av.open(str(clip), format="h264") as container:
            for frame in container.decode(video=0):
                self._frames.append(frame.reformat(format="yuv420p"))
                if len(self._frames) >= frames:
                    break
        self._n = 0
        self._start: float | None = None

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._n / FPS
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        else:
            # Like a camera: a consumer that falls behind loses pictures, it gets no burst.
            self._n = max(self._n, int((loop.time() - self._start) * FPS))
        frame = self._frames[self._n % len(self._frames)]
        frame.pts = self._n * 3000
        frame.time_base = Fraction(1, 90000)
        self._n += 1
        return frame


async def _stdin_lines() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def sender_main(mode: str, clip: Path) -> None:
    """Answers the parent's offer and sends until stdin closes."""
    stdin = await _stdin_lines()
    offer = json.loads(await stdin.readline())
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    source: FileSource | None = None
    if mode == "passthrough":
        source = FileSource(clip, width=WIDTH, height=HEIGHT, framerate=FPS, bitrate=BITRATE)
        fanout = VideoFanout(source, gate_open=True)
        track: MediaStreamTrack = fanout.track("receiver")
        transceiver = pc.addTransceiver(track, direction="sendonly")
        on_keyframe_request(transceiver.sender, lambda: fanout.request_keyframe("PLI/FIR"))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                track.activate()  # type: ignore[attr-defined]

        await source.start()
    else:
        track = FrameLoopTrack(clip)
        transceiver = pc.addTransceiver(track, direction="sendonly")
    prefer_h264(transceiver)
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    codec = negotiated_codec(transceiver)
    answer = {"sdp": pc.localDescription.sdp, "codec": codec.mimeType if codec else None}
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    while await stdin.readline():
        pass
    await pc.close()
    if source is not None:
        await source.stop()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure_sender(mode: str, clip: Path, seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--sender", mode, "--clip", str(clip),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stdout is not None
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    prefer_h264(pc.addTransceiver("video", direction="recvonly"))
    frames = 0
    tasks: list[asyncio.Task[None]] = []

    async def consume(track: MediaStreamTrack) -> None:
        nonlocal frames
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()
                frames += 1

    pc.on("track", lambda t: tasks.append(asyncio.ensure_future(consume(t))))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        proc.stdin.write((json.dumps({"sdp": pc.localDescription.sdp}) + "\n").encode())
        await proc.stdin.drain()
        answer = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await poll.until(lambda: frames >= FPS, within=60)
        await asyncio.sleep(3.0)  # warm-up: encoder ramp, jitter buffer
        cpu0, wall0, frames0 = _cpu_seconds(proc.pid), time.monotonic(), frames
        await asyncio.sleep(seconds)
        cpu1, wall1 = _cpu_seconds(proc.pid), time.monotonic()
        rss = _rss_mb(proc.pid)
        fps = (frames - frames0) / (wall1 - wall0)
        return {
            "cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0),
            "cpu_ms_per_frame": 1000 * (cpu1 - cpu0) / max(1, frames - frames0),
            "rss_mb": rss,
            "fps_received": fps,
            "codec": answer["codec"],
        }
    finally:
        proc.stdin.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for task in tasks:
            task.cancel()
        await pc.close()


# -- browser figures --------------------------------------------------------------------------


async def _launch(playwright: Any, *, permission: bool) -> Any:
    from tests.support.browser import CHROMIUM, CHROMIUM_ARGS

    args = [a for a in CHROMIUM_ARGS if permission or a != "--use-fake-ui-for-media-stream"]
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


async def _open_probe(browser: Any, srv: Any, *, permission: bool) -> tuple[Any, Any]:
    # bypass_csp: wait_for_function evaluates its predicate with eval, which the CSP forbids.
    context = await browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True)
    if permission:
        await context.grant_permissions(["camera", "microphone"])
    page = await context.new_page()
    await page.goto(f"{srv.base_url}/probe.html")
    await page.wait_for_function("() => window.appliance !== undefined")
    return context, page


async def measure_browser(seconds: float, joins: int, tmp: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    from appliance.media.sources.test import TestSource
    from tests.media.video_helpers import Participant
    from tests.support.server import running_server

    out: dict[str, Any] = {}
    async with running_server(tmp / "server", users=["door", "alice"], test_pages=True) as srv:
        source = TestSource(width=WIDTH, height=HEIGHT, framerate=FPS, bitrate=BITRATE)
        door = Participant(
            srv.base_url, srv.api_key, srv.user_token("door"), "door", "door-1",
            video=source, gate_open=True,
        )  # fmt: skip
        await door.media.start()
        args = {"apiKey": srv.api_key, "token": srv.user_token("alice"), "callId": "door-1"}
        try:
            async with async_playwright() as playwright:
                browser = await _launch(playwright, permission=True)
                context, page = await _open_probe(browser, srv, permission=True)
                await page.evaluate(JOIN_JS, {**args, "keep": 100_000})
                await page.wait_for_function("() => window.probe.reader.codes.length > 0")
                await asyncio.sleep(3.0)
                start = await page.evaluate("() => window.probe.reader.codes.length")
                await asyncio.sleep(seconds)
                codes = await page.evaluate(
                    "(n) => window.probe.reader.codes.slice(n).map((c) => c.ageMs)", start
                )
                out["glass_to_glass_ms"] = codes
                out["g2g_frames_per_s"] = len(codes) / seconds
                await page.evaluate("() => window.probe.call.leave()")
                await context.close()
                await browser.close()
                for permission in (False, True):
                    browser = await _launch(playwright, permission=permission)
                    times, rest = [], []
                    for _ in range(joins):
                        context, page = await _open_probe(browser, srv, permission=permission)
                        joined = await page.evaluate(JOIN_JS, {**args, "keep": 10})
                        join_at = joined["joinAt"]
                        await page.wait_for_function(
                            "() => window.probe.reader.codes.length > 0", timeout=30_000
                        )
                        shown, joined = await page.evaluate(
                            "() => [window.probe.reader.codes[0].shownAt, window.probe.joinedAt]"
                        )
                        times.append(shown - join_at)
                        rest.append(joined - join_at)
                        await page.evaluate("() => window.probe.call.leave()")
                        await context.close()
                        await asyncio.sleep(0.5)
                    key = "join_permission" if permission else "join_no_permission"
                    out[key], out[f"{key}_rest"] = times, rest
                    await browser.close()
        finally:
            await door.close()
    return out


# -- link drop --------------------------------------------------------------------------------


async def measure_link_drop(tmp: Path) -> float | None:
    from appliance.media.sources.test import TestSource
    from tests.media.test_netns import _start_server, _stop_server, last_counter
    from tests.media.video_helpers import Participant
    from tests.support.netns import netns_unavailable, veth_pair

    if netns_unavailable():
        return None
    with veth_pair(subnet="10.98.0") as net:
        async with net.a.loop() as side_a, net.b.loop() as side_b:
            manager, srv, forwarder = await side_a.run(_start_server(tmp / "netns", net.a.address))
            url = f"http://{net.a.address}:{forwarder.sockets[0].getsockname()[1]}"

            async def make(user: str, video: bool) -> Participant:
                media: dict[str, Any] = {"gate_open": True}
                if video:
                    media["video"] = TestSource(width=320, height=240, framerate=30)
                else:
                    media["receive_video"] = True
                return Participant(url, srv.api_key, srv.user_token(user), user, "site", **media)

            field = await side_a.run(make("field", True))
            hq = await side_b.run(make("hq", False))
            try:
                await side_a.run(field.media.start())
                await side_b.run(hq.media.start())
                await poll.until(lambda: last_counter(hq) >= 30, within=60)
                net.link_down()
                before = last_counter(hq)
                await asyncio.sleep(10.0)
                net.link_up()
                up = time.monotonic()
                try:
                    await poll.until(lambda: last_counter(hq) > before + 1, within=60)
                except TimeoutError:
                    return float("inf")
                return time.monotonic() - up
            finally:
                await side_b.run(hq.close())
                await side_a.run(field.close())
                await side_a.run(_stop_server(manager, forwarder))


# -- main -------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmpdir:
        tmp = Path(tmpdir)
        clip = make_clip(tmp / "clip.h264")
        passthrough = await measure_sender("passthrough", clip, args.seconds)
        encode = await measure_sender("encode", clip, args.seconds)
        browser = await measure_browser(args.seconds, args.joins, tmp)
        recovery = None if args.skip_netns else await measure_link_drop(tmp)
    g2g = browser["glass_to_glass_ms"]
    load_after = os.getloadavg()[0]
    per_frame_ratio = encode["cpu_ms_per_frame"] / passthrough["cpu_ms_per_frame"]
    rows = [
        ("sender CPU, passthrough (file source)", f"{passthrough['cpu_pct']:.1f} % of a core",
         f"{passthrough['fps_received']:.1f} fps, {passthrough['codec']}"),
        ("sender CPU, aiortc encoding frames", f"{encode['cpu_pct']:.1f} % of a core",
         f"{encode['fps_received']:.1f} fps, {encode['codec']}"),
        ("CPU ratio (target >= 20x)", f"{encode['cpu_pct'] / passthrough['cpu_pct']:.1f} x",
         f"per frame delivered: {per_frame_ratio:.1f} x "
         f"({encode['cpu_ms_per_frame']:.1f} vs {passthrough['cpu_ms_per_frame']:.2f} ms)"),
        ("glass-to-glass 720p30 (Chromium)", f"p50 {percentile(g2g, .5):.0f} ms",
         f"p95 {percentile(g2g, .95):.0f} ms, {len(g2g)} frames"),
        ("join -> first frame, no permission (mDNS)",
         f"p50 {statistics.median(browser['join_no_permission']):.0f} ms",
         f"p95 {percentile(browser['join_no_permission'], .95):.0f} ms"),
        ("  of which the REST join (server)",
         f"p50 {statistics.median(browser['join_no_permission_rest']):.0f} ms",
         "page: call.join() until its response"),
        ("join -> first frame, with permission",
         f"p50 {statistics.median(browser['join_permission']):.0f} ms",
         f"p95 {percentile(browser['join_permission'], .95):.0f} ms"),
        ("media back after a 10 s link drop",
         "skipped" if recovery is None else f"{recovery:.2f} s", "from link up"),
        ("RSS of the 1:1 call process (720p30)", f"{passthrough['rss_mb']:.0f} MB", ""),
        ("machine load average (1 min), 2 cores", f"{load_before:.1f} -> {load_after:.1f}",
         "figures are only comparable on a quiet machine"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<22} {note}")
    return {
        "passthrough_cpu_pct": round(passthrough["cpu_pct"], 2),
        "encode_cpu_pct": round(encode["cpu_pct"], 2),
        "cpu_ratio": round(encode["cpu_pct"] / passthrough["cpu_pct"], 1),
        "glass_to_glass_p50_ms": round(percentile(g2g, 0.5), 1),
        "glass_to_glass_p95_ms": round(percentile(g2g, 0.95), 1),
        "join_to_first_frame_p50_ms": round(statistics.median(browser["join_no_permission"]), 1),
        "join_to_first_frame_with_permission_p50_ms": round(
            statistics.median(browser["join_permission"]), 1
        ),
        "link_drop_recovery_s": None if recovery is None else round(recovery, 2),
        "call_rss_mb": round(passthrough["rss_mb"], 1),
        "cpu_ratio_per_frame": round(per_frame_ratio, 1),
        "load_average_1m": round(max(load_before, load_after), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measurement window")
    parser.add_argument("--joins", type=int, default=7, help="joins per join-time figure")
    parser.add_argument("--skip-netns", action="store_true", help="no link-drop figure")
    parser.add_argument("--sender", choices=["passthrough", "encode"], help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sender:
        asyncio.run(sender_main(args.sender, args.clip))
        return
    figures = asyncio.run(run(args))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
