"""Network benchmark (issue #16): loss, a thin uplink, TURN relay only, link flaps, each measured
in a Chromium receiver, for our kiosk and for the Chromium <-> Chromium anchor.

    sudo .venv/bin/python bench/network.py [--seconds 20] [--flap-seconds 60] [--joins 3]
    sudo .venv/bin/python bench/network.py --only loss5 --quick     # one condition, short

Needs root (network namespaces), nftables, tc and coturn (``make system-deps``). Namespace a holds
the call server, the kiosk (our call media, the ``test`` source: 640x480@30, H.264 passthrough,
1 Mbit/s, a 440 Hz Opus tone) and a Chromium for the anchor's sender; namespace b holds the
receiving Chromium (Debian's /usr/bin/chromium, headless, tests/support/chromium_netns.py).

* ours: Chromium in b opens the server's probe.html and joins receive-only through call.js;
* anchor: a Chromium page in a draws the same picture with the same block code on a canvas
  (captured at 30 fps, 640x480, a 440 Hz tone), sends it as H.264 only (setCodecPreferences)
  with maxBitrate = the kiosk's camera bitrate and degradationPreference maintain-resolution, to a
  second page of the Chromium in b; offer and answer pass through this script (no trickle).

Conditions (tests/support/netcond.py), applied after the first second of video:

* clean, loss2, loss5: nftables drops 0 / 2 / 5 % of b's UDP, in and out (so each way);
* thin: tbf 1 Mbit/s on a's uplink, the camera (and the anchor's maxBitrate) at 2 Mbit/s;
* turn: b may send UDP only to coturn (use-auth-secret); join -> first shown picture;
* flaps: outages of 0.2, 1 and 3 s (every packet of b dropped) every 4 s, in turn.

Figures from the receiving Chromium's getStats (inbound-rtp, deltas over the window): freeze % =
totalFreezesDuration / window, freezeCount, framesDropped, packetsLost / (lost + received),
jitter buffer delay = jitterBufferDelay / jitterBufferEmittedCount, audio concealed % =
concealedSamples / totalSamplesReceived; glass-to-glass p50/p95 from the block code read in
requestVideoFrameCallback (capture time drawn in the picture -> the time it is shown; the thin
uplink from 10 s on). Flap recovery: from the end of each outage to the first shown picture
newer than the last one before it. Prints a table (ours | anchor) and, last, one JSON line.
Never gates CI.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.media.sources.test import TestSource
from bench.media import percentile
from tests.media.test_netns import _start_server, _stop_server
from tests.media.video_helpers import Participant, ToneTrack
from tests.support.chromium_netns import (
    ANCHOR_SENDER_STATS_JS,
    ANCHOR_STATS_JS,
    CALL_STATS_JS,
    CODES_JS,
    anchor_call,
    chromium_in,
    default_routes,
    open_probe,
)
from tests.support.netcond import Firewall, add_address, cap, coturn, netcond_unavailable, uncap
from tests.support.netns import NamespaceLoop, VethPair, netns_unavailable, veth_pair
from tests.support.probejs import JOIN_JS

WIDTH, HEIGHT, FPS = 640, 480, 30
SUBNET = "10.95.0"
TURN_ADDRESS = f"{SUBNET}.3"
CALL_ID = "bench"
CONDITIONS = ("clean", "loss2", "loss5", "thin", "turn", "flaps")
MAX_AGE_MS = 60_000  # a code older than this is a CRC-8 false positive on an unreadable picture


@dataclass
class Rig:
    """The namespaces, a Chromium in each, and the loop of namespace a."""

    net: VethPair
    side_a: NamespaceLoop
    browser_a: Any
    browser_b: Any
    tmp: Path
    firewall: Firewall


@dataclass
class Receiver:
    """One receiving page in b: our kiosk's call (probe) or the anchor's connection."""

    page: Any
    stats_js: str
    sender_stats: Callable[[], Any]
    started_ms: float

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = await self.page.evaluate(self.stats_js)
        return out

    async def codes(self) -> list[tuple[int, float, float]]:
        rows = await self.page.evaluate(CODES_JS, 0)
        return [(int(c), float(s), float(a)) for c, s, a in rows if a < MAX_AGE_MS]

    async def wait_codes(self, count: int, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while len(await self.codes()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} pictures shown within {within} s")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def server(rig: Rig, name: str, **settings: Any) -> AsyncIterator[tuple[Any, str]]:
    manager, srv, forwarder = await rig.side_a.run(
        _start_server(rig.tmp / name, rig.net.a.address, test_pages=True, **settings)
    )
    try:
        yield srv, f"http://{rig.net.a.address}:{forwarder.sockets[0].getsockname()[1]}"
    finally:
        await rig.side_a.run(_stop_server(manager, forwarder))


@contextlib.asynccontextmanager
async def ours(rig: Rig, name: str, bitrate: int, **settings: Any) -> AsyncIterator[Receiver]:
    """Our kiosk in a, a receive-only Chromium page in b joined through call.js."""
    async with server(rig, name, **settings) as (srv, url):
        source = TestSource(width=WIDTH, height=HEIGHT, framerate=FPS, bitrate=bitrate)

        async def start_kiosk() -> Participant:
            kiosk = Participant(url, srv.api_key, srv.user_token("field"), "field", CALL_ID,
                                video=source, audio=ToneTrack(440), gate_open=True)  # fmt: skip
            await kiosk.media.start()
            return kiosk

        kiosk = await rig.side_a.run(start_kiosk())
        page = await open_probe(rig.browser_b, url)

        async def sender_stats() -> dict[str, Any]:
            fanout = kiosk.media.fanout
            return {
                "feedback": dict(fanout.bitrate.counts) if fanout else {},
                "bitrate_at_end": source.bitrate,
            }

        try:
            args = {"apiKey": srv.api_key, "token": srv.user_token("hq"), "callId": CALL_ID}
            joined = await page.evaluate(JOIN_JS, {**args, "keep": 100_000})
            yield Receiver(page, CALL_STATS_JS, sender_stats, joined["joinAt"])
        finally:
            with contextlib.suppress(Exception):
                await page.evaluate("() => window.probe.call.leave()")
            await page.context.close()
            await rig.side_a.run(kiosk.close())


@contextlib.asynccontextmanager
async def anchor(rig: Rig, name: str, bitrate: int, ice_servers: list[dict[str, Any]] | None = None
                 ) -> AsyncIterator[Receiver]:  # fmt: skip
    """Chromium in a -> Chromium in b, H.264, the same picture, resolution and bitrate."""
    async with server(rig, name) as (_srv, url):  # serves probe.html (blockcode.js) only
        sender = await open_probe(rig.browser_a, url)
        receiver = await open_probe(rig.browser_b, url)
        try:
            started = time.time() * 1000
            await anchor_call(sender, receiver, width=WIDTH, height=HEIGHT, fps=FPS,
                              max_bitrate=bitrate, ice_servers=ice_servers)  # fmt: skip

            async def sender_stats() -> Any:
                return await sender.evaluate(ANCHOR_SENDER_STATS_JS)

            yield Receiver(receiver, ANCHOR_STATS_JS, sender_stats, started)
        finally:
            for page in (sender, receiver):
                await page.context.close()


def _delta(before: dict[str, Any] | None, after: dict[str, Any] | None, key: str) -> float:
    if not after:
        return 0.0
    return float(after[key]) - float((before or {}).get(key, 0))


def figures(s0: dict[str, Any], s1: dict[str, Any], codes: list[tuple[int, float, float]],
            settle_ms: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """The window's figures from two getStats snapshots and the codes shown in between."""
    window = (s1["at"] - s0["at"]) / 1000
    restarted = s0["pcId"] != s1["pcId"]
    v0, v1 = (None if restarted else s0["video"]), s1["video"]
    a0, a1 = (None if restarted else s0["audio"]), s1["audio"]
    lost = _delta(v0, v1, "packetsLost")
    got = _delta(v0, v1, "packetsReceived")
    emitted = _delta(v0, v1, "jitterBufferEmittedCount")
    samples = _delta(a0, a1, "totalSamplesReceived")
    g2g = [age for _, shown, age in codes if s0["at"] + settle_ms <= shown <= s1["at"]]
    return {
        "freeze_pct": 100.0 * _delta(v0, v1, "totalFreezesDuration") / window,
        "freezes": int(_delta(v0, v1, "freezeCount")),
        "frames_dropped": int(_delta(v0, v1, "framesDropped")),
        "fps": _delta(v0, v1, "framesDecoded") / window,
        "video_lost_pct": 100.0 * lost / max(1.0, lost + got),
        "jitter_buffer_ms": 1000.0 * _delta(v0, v1, "jitterBufferDelay") / max(1.0, emitted),
        "audio_concealed_pct": 100.0 * _delta(a0, a1, "concealedSamples") / max(1.0, samples),
        "nacks": int(_delta(v0, v1, "nackCount")),
        "plis": int(_delta(v0, v1, "pliCount")),
        "g2g_p50_ms": percentile(g2g, 0.5),
        "g2g_p95_ms": percentile(g2g, 0.95),
        "width": (v1 or {}).get("frameWidth", 0),
        "codec": s1.get("codec"),
        "path": s1.get("path"),
        "restarted": restarted,
    }


async def measure_window(rig: Rig, receiver: Receiver, name: str, seconds: float) -> dict[str, Any]:
    await receiver.wait_codes(FPS)
    if name == "loss2":
        rig.firewall.loss(2)
    elif name == "loss5":
        rig.firewall.loss(5)
    elif name == "thin":
        cap(rig.net.a, rig.net.a.interface, "1mbit")
    try:
        s0 = await receiver.stats()
        await asyncio.sleep(seconds)
        s1 = await receiver.stats()
        out = figures(s0, s1, await receiver.codes(), 10_000.0 if name == "thin" else 0.0)
        out["sender"] = await receiver.sender_stats()
        out["loss_rule_packets"] = rig.firewall.counter("loss")
        return out
    finally:
        rig.firewall.loss(0)
        uncap(rig.net.a, rig.net.a.interface)


async def measure_condition(rig: Rig, name: str, seconds: float, with_anchor: bool
                            ) -> dict[str, dict[str, Any]]:  # fmt: skip
    bitrate = 2_000_000 if name == "thin" else 1_000_000
    if name == "thin":
        seconds = max(seconds, 25.0)
    out: dict[str, dict[str, Any]] = {}
    async with ours(rig, f"{name}-ours", bitrate) as receiver:
        out["ours"] = await measure_window(rig, receiver, name, seconds)
    if with_anchor:
        async with anchor(rig, f"{name}-anchor", bitrate) as receiver:
            out["anchor"] = await measure_window(rig, receiver, name, seconds)
    return out


def turn_credentials(secret: str, user: str) -> tuple[str, str]:
    """coturn's use-auth-secret: username "expiry:user", password base64(HMAC-SHA1(username))."""
    username = f"{int(time.time()) + 3600}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


async def measure_turn(rig: Rig, joins: int, with_anchor: bool) -> dict[str, Any]:
    """Join -> first shown picture at b, with b's UDP allowed only to coturn."""
    rig.firewall.block_udp_except(TURN_ADDRESS, 3478)
    secret = os.urandom(16).hex()
    out: dict[str, Any] = {"ours": [], "anchor": [], "paths": []}
    try:
        with coturn(rig.net.a, TURN_ADDRESS, secret, rig.tmp / "turn") as turn:
            for i in range(joins):
                relay_before = rig.firewall.counter("relay")
                async with ours(rig, f"turn-{i}", 1_000_000,
                                ice_servers=[turn.ice_server("udp")]) as receiver:  # fmt: skip
                    await receiver.wait_codes(1, within=30)
                    first = (await receiver.codes())[0][1]
                    out["ours"].append(first - receiver.started_ms)
                    out["paths"].append((await receiver.stats())["path"])
                assert rig.firewall.counter("relay") > relay_before  # media went through coturn
            if with_anchor:
                for i in range(joins):
                    user, password = turn_credentials(secret, "anchor")
                    servers = [
                        {"urls": [turn.url("udp")], "username": user, "credential": password}
                    ]
                    async with anchor(rig, f"turn-anchor-{i}", 1_000_000, servers) as receiver:
                        await receiver.wait_codes(1, within=30)
                        first = (await receiver.codes())[0][1]
                        out["anchor"].append(first - receiver.started_ms)
                        out["paths"].append((await receiver.stats())["path"])
            out["blocked"] = rig.firewall.counter("blocked")
    finally:
        rig.firewall = Firewall(rig.net.b)  # a fresh, empty table: UDP passes again
    return out


async def flap_run(rig: Rig, receiver: Receiver, seconds: float) -> list[tuple[float, float]]:
    """(outage s, from its end to the next newer picture shown s) for each outage."""
    await receiver.wait_codes(FPS)
    ends: list[tuple[float, float]] = []
    began = time.monotonic()
    i = 0
    while time.monotonic() - began < seconds:
        outage = (0.2, 1.0, 3.0)[i % 3]
        i += 1
        rig.firewall.drop_all()
        await asyncio.sleep(outage)
        rig.firewall.restore()
        ends.append((outage, time.time() * 1000))
        await asyncio.sleep(4.0)
    await asyncio.sleep(6.0)  # the last outage's recovery, if slow
    codes = await receiver.codes()
    out = []
    for outage, end in ends:
        before = max((c for c, shown, _ in codes if shown < end), default=-1)
        after = [shown for c, shown, _ in codes if shown >= end and c > before + 1]
        out.append((outage, (after[0] - end) / 1000 if after else float("inf")))
    return out


async def measure_flaps(rig: Rig, seconds: float, with_anchor: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with ours(rig, "flaps-ours", 1_000_000) as receiver:
        out["ours"] = await flap_run(rig, receiver, seconds)
    if with_anchor:
        async with anchor(rig, "flaps-anchor", 1_000_000) as receiver:
            out["anchor"] = await flap_run(rig, receiver, seconds)
    return out


@contextlib.asynccontextmanager
async def rig(tmp: Path) -> AsyncIterator[Rig]:
    from playwright.async_api import async_playwright

    with veth_pair(subnet=SUBNET) as net:
        default_routes(net)
        add_address(net.a, TURN_ADDRESS)
        async with net.a.loop() as side_a, async_playwright() as playwright:
            browser_a = await chromium_in(playwright, net.a, tmp)
            browser_b = await chromium_in(playwright, net.b, tmp)
            try:
                yield Rig(net, side_a, browser_a, browser_b, tmp, Firewall(net.b))
            finally:
                await browser_a.close()
                await browser_b.close()


def _row(r: dict[str, Any] | None) -> str:
    if r is None:
        return "not measured"
    return (
        f"freeze {r['freeze_pct']:.2f} % ({r['freezes']}), g2g {r['g2g_p50_ms']:.0f}/"
        f"{r['g2g_p95_ms']:.0f} ms, {r['fps']:.1f} fps, lost {r['video_lost_pct']:.1f} %, "
        f"dropped {r['frames_dropped']}, jb {r['jitter_buffer_ms']:.0f} ms, "
        f"audio concealed {r['audio_concealed_pct']:.2f} %"
    )


def _round(value: float | None, digits: int) -> float | None:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return round(value, digits)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    only = args.only.split(",") if args.only else list(CONDITIONS)
    results: dict[str, dict[str, Any]] = {}
    turn: dict[str, Any] | None = None
    flaps: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-network-") as tmpdir:
        async with rig(Path(tmpdir)) as r:
            for name in ("clean", "loss2", "loss5", "thin"):
                if name in only:
                    results[name] = await measure_condition(r, name, args.seconds, args.anchor)
            if "turn" in only:
                turn = await measure_turn(r, args.joins, args.anchor)
            if "flaps" in only:
                flaps = await measure_flaps(r, args.flap_seconds, args.anchor)
    load_after = os.getloadavg()[0]

    rows = [("condition", "ours: kiosk -> Chromium", "anchor: Chromium -> Chromium")]
    for name, res in results.items():
        rows.append((name, _row(res["ours"]), _row(res.get("anchor"))))
        anchor_sender = res.get("anchor", {}).get("sender") or {}
        rows.append((
            "",
            f"  nacks {res['ours']['nacks']}, plis {res['ours']['plis']}, sender "
            f"{res['ours']['sender']}",
            f"  nacks {res.get('anchor', {}).get('nacks')}, plis "
            f"{res.get('anchor', {}).get('plis')}, width {res.get('anchor', {}).get('width')}, "
            f"sender limited by {anchor_sender.get('qualityLimitationReason')}, "
            f"{anchor_sender.get('framesEncoded')} encoded of {anchor_sender.get('framesDrawn')} "
            f"drawn",
        ))  # fmt: skip
    if turn is not None:
        rows.append((
            "turn relay",
            f"join -> first picture p50 {percentile(turn['ours'], .5):.0f} ms, max "
            f"{max(turn['ours']):.0f} ms ({len(turn['ours'])} joins)",
            f"offer -> first picture p50 {percentile(turn['anchor'], .5):.0f} ms"
            if turn["anchor"] else "not measured",
        ))  # fmt: skip
        rows.append(("", f"  paths {turn['paths']}", ""))
    recovery: dict[str, list[float]] = {}
    if flaps is not None:
        for side in ("ours", "anchor"):
            if side in flaps:
                recovery[side] = [rec for _, rec in flaps[side]]

        def flap_row(side: str) -> str:
            if side not in recovery:
                return "not measured"
            times = recovery[side]
            slow = [(o, round(x, 2)) for o, x in flaps[side] if x > 1.0]
            return (f"{len(times)} outages, recovery p50 {percentile(times, .5):.2f} s, "
                    f"p95 {percentile(times, .95):.2f} s; over 1 s: {slow}")  # fmt: skip

        rows.append(("flaps", flap_row("ours"), flap_row("anchor")))
    rows.append(("load average (1 min)", f"{load_before:.1f} -> {load_after:.1f}", ""))
    width = max(len(row[0]) for row in rows)
    for name, left, right in rows:
        print(f"{name:<{width}}  {left}  |  {right}")

    def fig(cond: str, key: str, side: str = "ours", digits: int = 2) -> float | None:
        res = results.get(cond, {}).get(side)
        return _round(res[key], digits) if res else None

    return {
        "loss5_freeze_pct": fig("loss5", "freeze_pct"),
        "loss5_freeze_pct_chromium": fig("loss5", "freeze_pct", "anchor"),
        "loss5_g2g_p95_ms": fig("loss5", "g2g_p95_ms", digits=1),
        "loss5_g2g_p95_ms_chromium": fig("loss5", "g2g_p95_ms", "anchor", 1),
        "loss2_freeze_pct": fig("loss2", "freeze_pct"),
        "loss2_freeze_pct_chromium": fig("loss2", "freeze_pct", "anchor"),
        "clean_freeze_pct": fig("clean", "freeze_pct"),
        "clean_g2g_p95_ms": fig("clean", "g2g_p95_ms", digits=1),
        "clean_g2g_p95_ms_chromium": fig("clean", "g2g_p95_ms", "anchor", 1),
        "thin_uplink_g2g_p95_ms": fig("thin", "g2g_p95_ms", digits=1),
        "thin_uplink_g2g_p95_ms_chromium": fig("thin", "g2g_p95_ms", "anchor", 1),
        "thin_uplink_audio_concealed_pct": fig("thin", "audio_concealed_pct"),
        "thin_uplink_audio_concealed_pct_chromium": fig("thin", "audio_concealed_pct", "anchor"),
        "turn_relay_first_frame_ms": _round(percentile(turn["ours"], 0.5), 1) if turn else None,
        "turn_relay_first_frame_ms_chromium": (
            _round(percentile(turn["anchor"], 0.5), 1) if turn and turn["anchor"] else None
        ),
        "flap_recovery_p95_s": (
            _round(percentile(recovery["ours"], 0.95), 2) if "ours" in recovery else None
        ),
        "flap_recovery_p95_s_chromium": (
            _round(percentile(recovery["anchor"], 0.95), 2) if "anchor" in recovery else None
        ),
        "receiver": "chromium (getStats inbound-rtp, block code) for every figure",
        "window_s": args.seconds,
        "load_average_1m": round(max(load_before, load_after), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per condition and side")
    parser.add_argument("--flap-seconds", type=float, default=60.0, help="flapping for this long")
    parser.add_argument("--joins", type=int, default=3, help="relay-only joins")
    parser.add_argument("--only", help=f"comma-separated conditions of {', '.join(CONDITIONS)}")
    parser.add_argument("--no-anchor", dest="anchor", action="store_false",
                        help="our kiosk only, no Chromium -> Chromium column")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="8 s windows, 12 s of flaps, one relay join")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.flap_seconds, args.joins = 8.0, 12.0, 1
    if args.only and set(args.only.split(",")) - set(CONDITIONS):
        parser.error(f"--only takes {', '.join(CONDITIONS)}")
    reason = netns_unavailable() or netcond_unavailable()
    if reason:
        sys.exit(f"bench/network.py: {reason}")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
