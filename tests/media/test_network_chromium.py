"""Our kiosk -> a Chromium receiver across two network namespaces (issue #16), short versions of
bench/network.py: 5 % loss each way, and one 1 s outage.

Namespace a holds the call server and the kiosk (``test`` source); namespace b holds Debian's
Chromium (tests/support/chromium_netns.py), which joins receive-only through call.js on the
server's probe.html and reads the block code of every picture it shows. Loss and the outage are
nftables rules in b (tests/support/netcond.py). Root only, like the other ``netns`` tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import async_playwright

from appliance.media.sources.test import TestSource
from tests.media.test_netns import _start_server, _stop_server
from tests.media.video_helpers import Participant, ToneTrack
from tests.support import poll
from tests.support.browser import HAVE_CHROMIUM
from tests.support.chromium_netns import (
    CALL_STATS_JS,
    CODES_JS,
    chromium_in,
    default_routes,
    open_probe,
)
from tests.support.netcond import Firewall, netcond_unavailable
from tests.support.netns import NamespaceLoop, VethPair, veth_pair
from tests.support.probejs import JOIN_JS

pytestmark = [pytest.mark.netns, pytest.mark.timeout(150)]

SUBNET = "10.97.0"
CALL_ID = "door-chromium"
FPS = 15


@pytest.fixture
def net() -> Iterator[VethPair]:
    reason = netcond_unavailable()
    if reason:
        pytest.skip(reason)
    if not HAVE_CHROMIUM:
        pytest.fail("/usr/bin/chromium is missing: install Debian's chromium (make system-deps)")
    with veth_pair(subnet=SUBNET) as pair:
        default_routes(pair)
        yield pair


@dataclass
class ChromiumCall:
    side_a: NamespaceLoop
    kiosk: Participant
    page: Any

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = await self.page.evaluate(CALL_STATS_JS)
        return out

    async def last_counter(self) -> int:
        codes = await self.page.evaluate(CODES_JS, 0)
        return max((c for c, _, age in codes[-30:] if age < 60_000), default=-1)

    async def packets_sent(self) -> int:
        """RTP packets our kiosk's video sender put on the wire (aiortc's outbound-rtp)."""

        async def count() -> int:
            total = 0
            for peer in self.kiosk.media.peers.values():
                if peer.pc is None:
                    continue
                for s in (await peer.pc.getStats()).values():
                    if s.type == "outbound-rtp" and s.kind == "video":
                        total += s.packetsSent
            return total

        return await self.side_a.run(count())

    async def wait_frames(self, count: int, within: float = 30.0) -> None:
        async def decoded() -> bool:
            video = (await self.stats())["video"]
            return bool(video) and video["framesDecoded"] >= count

        await poll.until(decoded, within, what=f"{count} pictures decoded", every=0.2)


@contextlib.asynccontextmanager
async def chromium_call(net: VethPair, tmp_path: Path) -> AsyncIterator[ChromiumCall]:
    async with net.a.loop() as side_a, async_playwright() as playwright:
        manager, srv, forwarder = await side_a.run(
            _start_server(tmp_path / "server", net.a.address, test_pages=True)
        )
        url = f"http://{net.a.address}:{forwarder.sockets[0].getsockname()[1]}"
        source = TestSource(width=320, height=240, framerate=FPS, bitrate=300_000)

        async def start_kiosk() -> Participant:
            kiosk = Participant(url, srv.api_key, srv.user_token("field"), "field", CALL_ID,
                                video=source, audio=ToneTrack(440), gate_open=True)  # fmt: skip
            await kiosk.media.start()
            return kiosk

        kiosk = await side_a.run(start_kiosk())
        browser = await chromium_in(playwright, net.b, tmp_path / "browser")
        try:
            page = await open_probe(browser, url)
            args = {"apiKey": srv.api_key, "token": srv.user_token("hq"), "callId": CALL_ID}
            await page.evaluate(JOIN_JS, {**args, "keep": 100_000})
            yield ChromiumCall(side_a, kiosk, page)
        finally:
            await browser.close()
            await side_a.run(kiosk.close())
            await side_a.run(_stop_server(manager, forwarder))


async def test_chromium_keeps_decoding_our_video_at_five_percent_loss_each_way(
    net: VethPair, tmp_path: Path
) -> None:
    """nftables drops 5 % of b's UDP in and out for 10 s. Chromium counts lost packets (the loss
    is real), our sender keeps putting packets on the wire, and pictures keep being decoded to
    the end, not just before a freeze."""
    firewall = Firewall(net.b)
    async with chromium_call(net, tmp_path) as call:
        await call.wait_frames(FPS)
        firewall.loss(5)
        s0, sent0 = await call.stats(), await call.packets_sent()
        await asyncio.sleep(7.0)
        s1 = await call.stats()
        await asyncio.sleep(3.0)
        s2, sent2 = await call.stats(), await call.packets_sent()
        v0, v1, v2 = s0["video"], s1["video"], s2["video"]
        assert s0["pcId"] == s2["pcId"], "the connection was replaced during the loss"
        assert s2["codec"] == "video/H264"
        assert sent2 - sent0 > 100, (sent0, sent2)
        assert firewall.counter("loss") > 10
        assert v2["packetsLost"] - v0["packetsLost"] > 0, (v0, v2)
        decoded = v2["framesDecoded"] - v0["framesDecoded"]
        assert decoded >= 0.6 * 10 * FPS, (decoded, v2)
        # Recovered, still moving: the last 3 s decoded at least half the frame rate.
        assert v2["framesDecoded"] - v1["framesDecoded"] >= 0.5 * 3 * FPS, (v1, v2)
        print(f"decoded {decoded} in 10 s, lost {v2['packetsLost'] - v0['packetsLost']}, "
              f"freezes {v2['freezeCount'] - v0['freezeCount']}, nacks "
              f"{v2['nackCount'] - v0['nackCount']}, plis {v2['pliCount'] - v0['pliCount']}")  # fmt: skip


async def test_chromium_shows_moving_video_again_after_a_one_second_outage(
    net: VethPair, tmp_path: Path
) -> None:
    """Every packet of b is dropped for 1 s: afterwards new pictures reach Chromium's screen
    without anyone doing anything (no rejoin, no reload)."""
    firewall = Firewall(net.b)
    async with chromium_call(net, tmp_path) as call:
        await call.wait_frames(FPS)
        firewall.drop_all()
        await asyncio.sleep(1.0)
        before = await call.last_counter()
        dropped = firewall.counter("outage")  # read before the rule goes with the outage
        firewall.restore()
        assert dropped > 0
        ended = time.monotonic()

        async def moving() -> bool:
            return await call.last_counter() > before + 1

        await poll.until(
            moving, 10.0, what=f"a new picture after the outage ({before})", every=0.05
        )
        print(f"moving again {time.monotonic() - ended:.2f} s after the outage")
