"""Network benchmark (issue #16): loss, a thin uplink, TURN relay only, link flaps.

    .venv/bin/python bench/network.py [--seconds 20] [--flap-seconds 60]

Needs root (network namespaces), nftables, tc and coturn (``make system-deps``). The kiosk (our
call media, the ``test`` source: 640x480@30, H.264 passthrough, Opus tone) and the call server live
in namespace a; the receiver in namespace b. Conditions (tests/support/netcond.py):

* loss2 / loss5: nftables drops 2 % / 5 % of b's UDP, in and out (so each way);
* thin uplink: tbf 1 Mbit/s on the kiosk's uplink, the camera configured for 2 Mbit/s;
* turn: b may send UDP only to coturn (use-auth-secret, credentials minted by our server);
* flaps: outages of 0.2, 1 and 3 s (all packets dropped) every 4 s, in turn, for a minute.

The receiver is aiortc (our own receive path), not Chromium: the Chromium <-> Chromium anchor and
Chromium as the receiver of our kiosk are not measured yet, the table says so in their column.
Figures per condition: freezes as WebRTC counts them (an inter-frame gap longer than
max(3 x the mean gap, mean gap + 150 ms); freeze % = their summed duration / call duration),
glass-to-glass from the block code (capture time drawn into the picture, read after decoding),
lost packets, and for audio the share of 20 ms packets lost (each is concealed by the decoder).
Prints a table and, last, one JSON line. Never gates CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.media.sources.test import TestSource
from bench.media import percentile
from tests.media.test_netns import _start_server, _stop_server, last_counter
from tests.media.video_helpers import Participant, ToneTrack, wait_until
from tests.support.netcond import (
    Firewall,
    add_address,
    cap,
    coturn,
    netcond_unavailable,
)
from tests.support.netns import NamespaceLoop, VethPair, netns_unavailable, veth_pair

WIDTH, HEIGHT, FPS = 640, 480, 30
SUBNET = "10.95.0"
TURN_ADDRESS = f"{SUBNET}.3"


class Call:
    def __init__(self, side_a: NamespaceLoop, side_b: NamespaceLoop, field: Participant,
                 hq: Participant, source: TestSource) -> None:  # fmt: skip
        self.side_a, self.side_b, self.field, self.hq, self.source = (
            side_a,
            side_b,
            field,
            hq,
            source,
        )

    def frames(self) -> int:
        return sum(r.frames for r in self.hq.video)

    def arrivals(self) -> list[tuple[float, float]]:
        """(decoded at, glass-to-glass ms) per decoded picture, all connections."""
        out = []
        for reader in self.hq.video:
            for code, at in zip(reader.codes, reader.decoded_at, strict=False):
                age = (int(at * 1000) - code.time_ms) & 0xFFFFFFFF
                out.append((at, float(age)))
        return sorted(out)

    async def inbound(self) -> dict[str, dict[str, float]]:
        async def stats() -> dict[str, dict[str, float]]:
            out: dict[str, dict[str, float]] = {}
            for peer in self.hq.media.peers.values():
                if peer.pc is None:
                    continue
                for s in (await peer.pc.getStats()).values():
                    if s.type == "inbound-rtp":
                        out[s.kind] = {"lost": s.packetsLost, "received": s.packetsReceived}
            return out

        return await self.side_b.run(stats())


@contextlib.asynccontextmanager
async def call(net: VethPair, tmp: Path, bitrate: int, **settings: Any) -> AsyncIterator[Call]:
    async with net.a.loop() as side_a, net.b.loop() as side_b:
        manager, srv, forwarder = await side_a.run(_start_server(tmp, net.a.address, **settings))
        url = f"http://{net.a.address}:{forwarder.sockets[0].getsockname()[1]}"
        source = TestSource(width=WIDTH, height=HEIGHT, framerate=FPS, bitrate=bitrate)

        async def make(user: str, **media: Any) -> Participant:
            return Participant(url, srv.api_key, srv.user_token(user), user, "bench", **media)

        async def make_field() -> Participant:
            return await make("field", video=source, audio=ToneTrack(440), gate_open=True)

        field = await side_a.run(make_field())
        hq = await side_b.run(make("hq", receive_video=True, gate_open=True))
        try:
            await side_a.run(field.media.start())
            await side_b.run(hq.media.start())
            yield Call(side_a, side_b, field, hq, source)
        finally:
            await side_b.run(hq.close())
            await side_a.run(field.close())
            await side_a.run(_stop_server(manager, forwarder))


def freezes(times: list[float], start: float, end: float) -> tuple[int, float]:
    """WebRTC's freeze count and total duration (s) over the decoded pictures in [start, end]."""
    shown = [t for t in times if start <= t <= end]
    if len(shown) < 2:
        return 1, end - start
    gaps = [b - a for a, b in itertools.pairwise(shown)]
    count, total = 0, 0.0
    for i, gap in enumerate(gaps):
        recent = gaps[max(0, i - 30) : i] or [1 / FPS]
        mean = sum(recent) / len(recent)
        if gap > max(3 * mean, mean + 0.150):
            count += 1
            total += gap
    total += max(0.0, shown[0] - start) + max(0.0, end - shown[-1])
    return count, total


async def measure_condition(net: VethPair, tmp: Path, name: str, seconds: float,
                            *, loss: int = 0, thin: bool = False) -> dict[str, Any]:  # fmt: skip
    firewall = Firewall(net.b)
    bitrate = 2_000_000 if thin else 1_000_000
    async with call(net, tmp / name, bitrate) as c:
        await wait_until(lambda: c.frames() >= FPS, within=60)
        if loss:
            firewall.loss(loss)
        if thin:
            cap(net.a, net.a.interface, "1mbit")
        before = await c.inbound()
        start = time.time()
        await asyncio.sleep(seconds)
        end = time.time()
        after = await c.inbound()
        fanout = c.field.media.fanout
        feedback = dict(fanout.bitrate.counts) if fanout else {}
        final_bitrate = c.source.bitrate
    arrivals = c.arrivals()
    settle = start + (10.0 if thin else 0.0)
    g2g = [age for at, age in arrivals if settle <= at <= end]
    count, frozen = freezes([at for at, _ in arrivals], start, end)

    def lost_pct(kind: str) -> float:
        b, a = before.get(kind, {}), after.get(kind, {})
        if a.get("received", 0) < b.get("received", 0):
            b = {}  # a new connection (ICE restart) in between: its counters started at 0
        lost = a.get("lost", 0) - b.get("lost", 0)
        got = a.get("received", 0) - b.get("received", 0)
        return 100.0 * lost / max(1, lost + got)

    return {
        "freeze_pct": 100.0 * frozen / (end - start),
        "freezes": count,
        "g2g_p50_ms": percentile(g2g, 0.5),
        "g2g_p95_ms": percentile(g2g, 0.95),
        "fps": len([1 for at, _ in arrivals if start <= at <= end]) / (end - start),
        "video_lost_pct": lost_pct("video"),
        "audio_concealed_pct": lost_pct("audio"),
        "feedback": feedback,
        "final_bitrate": final_bitrate,
    }


async def measure_turn(net: VethPair, tmp: Path, joins: int) -> list[float]:
    """Join -> first decoded picture at b, with b's UDP allowed only to coturn."""
    add_address(net.a, TURN_ADDRESS)
    firewall = Firewall(net.b)
    firewall.block_udp_except(TURN_ADDRESS, 3478)
    times = []
    with coturn(net.a, TURN_ADDRESS, os.urandom(16).hex(), tmp / "turn") as turn:
        for i in range(joins):
            started = time.monotonic()
            async with call(net, tmp / f"turn-{i}", 1_000_000,
                            ice_servers=[turn.ice_server("udp")]) as c:  # fmt: skip
                await wait_until(lambda: c.frames() >= 1, within=60)
                times.append(1000 * (time.monotonic() - started))
            assert firewall.counter("relay") > 0 and firewall.counter("blocked") > 0
    return times


async def measure_flaps(net: VethPair, tmp: Path, seconds: float) -> list[tuple[float, float]]:
    """(outage s, from its end to the next new picture s) for each outage."""
    firewall = Firewall(net.b)
    out: list[tuple[float, float]] = []
    async with call(net, tmp / "flaps", 1_000_000) as c:
        await wait_until(lambda: c.frames() >= FPS, within=60)
        began = time.monotonic()
        i = 0
        while time.monotonic() - began < seconds:
            outage = (0.2, 1.0, 3.0)[i % 3]
            i += 1
            firewall.drop_all()
            await asyncio.sleep(outage)
            before = last_counter(c.hq)
            firewall.restore()
            ended = time.monotonic()
            try:
                await wait_until(lambda b=before: last_counter(c.hq) > b + 1, within=30)  # type: ignore[misc]
                out.append((outage, time.monotonic() - ended))
            except TimeoutError:
                out.append((outage, float("inf")))
            await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - ended)))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-network-") as tmpdir:
        tmp = Path(tmpdir)
        for name, kwargs in (("clean", {}), ("loss2", {"loss": 2}), ("loss5", {"loss": 5}),
                             ("thin", {"thin": True})):  # fmt: skip
            with veth_pair(subnet=SUBNET) as net:
                seconds = max(args.seconds, 25.0) if name == "thin" else args.seconds
                results[name] = await measure_condition(net, tmp, name, seconds, **kwargs)
        with veth_pair(subnet=SUBNET) as net:
            turn = await measure_turn(net, tmp, args.joins)
        with veth_pair(subnet=SUBNET) as net:
            flaps = await measure_flaps(net, tmp, args.flap_seconds)
    recovery = [r for _, r in flaps]
    over = [(o, r) for o, r in flaps if r > 1.0]
    chromium = "not measured"
    rows = [("condition", "ours (kiosk -> aiortc receiver)", "Chromium <-> Chromium")]
    for name, r in results.items():
        rows.append((
            name,
            f"freeze {r['freeze_pct']:.2f} % ({r['freezes']}), g2g p50/p95 "
            f"{r['g2g_p50_ms']:.0f}/{r['g2g_p95_ms']:.0f} ms, {r['fps']:.1f} fps, "
            f"video lost {r['video_lost_pct']:.1f} %, audio lost {r['audio_concealed_pct']:.2f} %",
            chromium,
        ))  # fmt: skip
        rows.append(("", f"  feedback {r['feedback']}, bitrate at end {r['final_bitrate']}", ""))
    rows.append(("turn relay", f"join -> first frame p50 {percentile(turn, .5):.0f} ms, "
                 f"max {max(turn):.0f} ms ({len(turn)} joins)", chromium))  # fmt: skip
    rows.append(("flaps", f"{len(flaps)} outages, recovery p50 {percentile(recovery, .5):.2f} s, "
                 f"p95 {percentile(recovery, .95):.2f} s; over 1 s: {over}", chromium))  # fmt: skip
    rows.append(("load average (1 min)", f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}", ""))
    width = max(len(r[0]) for r in rows)
    for name, ours, anchor in rows:
        print(f"{name:<{width}}  {ours}  |  {anchor}")
    return {
        "loss5_freeze_pct": round(results["loss5"]["freeze_pct"], 2),
        "loss5_freeze_pct_chromium": None,
        "loss5_g2g_p95_ms": round(results["loss5"]["g2g_p95_ms"], 1),
        "loss2_freeze_pct": round(results["loss2"]["freeze_pct"], 2),
        "clean_freeze_pct": round(results["clean"]["freeze_pct"], 2),
        "thin_uplink_g2g_p95_ms": round(results["thin"]["g2g_p95_ms"], 1),
        "thin_uplink_audio_concealed_pct": round(results["thin"]["audio_concealed_pct"], 2),
        "turn_relay_first_frame_ms": round(percentile(turn, 0.5), 1),
        "flap_recovery_p95_s": round(percentile(recovery, 0.95), 2),
        "receiver": "aiortc",
        "load_average_1m": round(max(load_before, os.getloadavg()[0]), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per loss condition")
    parser.add_argument("--flap-seconds", type=float, default=60.0, help="flapping for this long")
    parser.add_argument("--joins", type=int, default=3, help="relay-only joins")
    args = parser.parse_args()
    reason = netns_unavailable() or netcond_unavailable()
    if reason:
        sys.exit(f"bench/network.py: {reason}")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
