"""Headless Chromium joins the appliance's call through call.js: it decodes the appliance's H.264
passthrough video (frame counters read in the page keep increasing) and the appliance finds
Chromium's fake microphone (a beep) at its frequency."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, async_playwright

from appliance.media.passthrough import DecodedVideoTrack
from appliance.media.sources.test import TestSource
from tests.media.video_helpers import Participant, ToneTrack
from tests.support import poll
from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PageGuard,
    guarded_browser,
    wait_for_js,
)
from tests.support.probejs import JOIN_JS
from tests.support.server import ServerHandle, running_server
from tests.support.tone import dominant_frequency

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CALL_ID = "door-1"
# Chromium's fake audio capture (media/audio/fake_audio_input_stream.cc: kBeepFrequency = 400,
# a 20 ms beep every 500 ms).
CHROMIUM_BEEP_HZ = 400.0


@pytest_asyncio.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path, users=["door", "alice"], test_pages=True) as handle:
        yield handle


@pytest_asyncio.fixture
async def guard() -> AsyncIterator[PageGuard]:
    async with guarded_browser() as pages:
        yield pages


@pytest_asyncio.fixture
async def private_guard() -> AsyncIterator[PageGuard]:
    """Chromium without ``--use-fake-ui-for-media-stream``: a page that was never granted the
    camera or microphone, so Chromium hides its host addresses behind mDNS names."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[a for a in CHROMIUM_ARGS if a != "--use-fake-ui-for-media-stream"],
        )
        pages = PageGuard(chromium)
        try:
            yield pages
        finally:
            await pages.close()
            await chromium.close()
    pages.check()


async def open_probe(guard: PageGuard, srv: ServerHandle, *, permissions: bool) -> Page:
    guard.allow(srv.base_url)
    page = await guard.new_page(permissions=permissions)
    await page.goto(f"{srv.base_url}/probe.html")
    await wait_for_js(page, "() => window.appliance !== undefined")
    return page


async def join(page: Page, srv: ServerHandle, *, send_audio: bool) -> str:
    args: dict[str, Any] = {
        "apiKey": srv.api_key,
        "token": srv.user_token("alice"),
        "callId": CALL_ID,
        "media": {"audio": True, "video": False} if send_audio else None,
        "keep": 10_000,
    }
    joined = await page.evaluate(JOIN_JS, args)
    session_id: str = joined["sessionId"]
    return session_id


async def test_chromium_decodes_passthrough_h264_and_the_appliance_hears_it(
    srv: ServerHandle, guard: PageGuard
) -> None:
    source = TestSource(width=320, height=240, framerate=15)
    door = Participant(
        srv.base_url, srv.api_key, srv.user_token("door"), "door", CALL_ID,
        video=source, audio=ToneTrack(697.0), gate_open=True,
    )  # fmt: skip
    try:
        await door.media.start()
        page = await open_probe(guard, srv, permissions=True)
        browser_session = await join(page, srv, send_audio=True)  # the newcomer offers
        await poll.until(lambda: browser_session in door.media.peers, within=20.0)
        peer = door.media.peers[browser_session]
        await poll.until(lambda: peer.state == "connected", within=20.0)
        count = await wait_for_js(
            page,
            "() => window.probe.reader.codes.length >= 20 && window.probe.reader.codes.length",
            seconds=30,
        )
        counters = await page.evaluate("() => window.probe.reader.counters")
        assert count >= 20
        assert counters == sorted(counters) and counters[-1] > counters[0]
        stats = await page.evaluate("() => window.probe.call.stats()")
        assert stats["videoCodec"] == "video/H264"
        assert peer.video_codec == "video/H264"
        assert not isinstance(peer.video_track, DecodedVideoTrack)
        assert peer.video_track is not None and peer.video_track.packets_sent >= 20
        assert peer.video_track.first_packet_keyframe is True

        # Chromium's fake microphone reaches the appliance: found by its pitch.
        await poll.until(lambda: bool(door.audio) and door.audio[0].seconds >= 3.0, within=20.0)
        pitch = dominant_frequency(door.audio[0].samples(2.0))
        assert pitch == pytest.approx(CHROMIUM_BEEP_HZ, abs=10), pitch
    finally:
        await door.close()


async def test_receive_only_page_with_mdns_candidates_gets_video_when_the_appliance_offers(
    srv: ServerHandle, private_guard: PageGuard
) -> None:
    """A page without camera/microphone permission hides its host candidates behind mDNS names;
    the appliance drops them and connects through Chromium's peer-reflexive checks."""
    page = await open_probe(private_guard, srv, permissions=False)
    await join(page, srv, send_audio=False)
    source = TestSource(width=320, height=240, framerate=15)
    door = Participant(
        srv.base_url, srv.api_key, srv.user_token("door"), "door", CALL_ID,
        video=source, gate_open=True,
    )  # fmt: skip
    try:
        info = await door.media.start()  # the appliance is the newcomer: it offers
        assert len(info.participants) == 1
        peer = door.media.peers[info.participants[0]]
        await wait_for_js(page, "() => window.probe.reader.codes.length >= 10", seconds=30)
        counters = await page.evaluate("() => window.probe.reader.counters")
        assert counters == sorted(counters)
        assert peer.video_codec == "video/H264"
        assert peer._mdns_dropped >= 1  # Chromium did send .local candidates, none was resolved
    finally:
        await door.close()
