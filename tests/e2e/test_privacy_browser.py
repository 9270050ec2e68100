"""Privacy in the browser (issue #9): Mute and Camera off keep holding after an ICE restart (by
either side) and after the page's WebSocket reconnects, counted with Chromium's own
``outbound-rtp`` statistics; and the console's buttons show what is on the wire.

The far end is the appliance's media engine (a CallMedia session with a 697 Hz tone): every
"nothing was sent" window is one in which the page's connection demonstrably carried the device's
audio (``inbound-rtp`` grew by 100 packets, two seconds).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from tests.e2e.test_console import (  # noqa: F401  (guard, srv: fixtures)
    CAM_SENDER_IS_EMPTY,
    MIC_SENDER_IS_EMPTY,
    device_page,
    guard,
    sign_in,
    srv,
)
from tests.media.video_helpers import Participant, ToneTrack
from tests.support import poll
from tests.support.browser import PageGuard, guarded_browser, poll_js, wait_for_js
from tests.support.probejs import JOIN_JS
from tests.support.server import ServerHandle, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

CALL_ID = "room-9"


# Packets the page's current connection(s) sent and received, per kind, from Chromium's stats.
WIRE_JS = """
async (path) => {
  const call = path.split('.').reduce((o, k) => o[k], window);
  const out = {audio: 0, video: 0, heard: 0, generation: -1, state: null};
  for (const peer of call.peers.values()) {
    if (!peer.pc) continue;
    out.generation = peer.generation;
    out.state = peer.pc.connectionState;
    (await peer.pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp') out[s.kind] += s.packetsSent || 0;
      if (s.type === 'inbound-rtp' && s.kind === 'audio') out.heard += s.packetsReceived || 0;
    });
  }
  return out;
}
"""


@pytest_asyncio.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path, users=["door", "alice"], test_pages=True) as handle:
        yield handle


@pytest_asyncio.fixture
async def pages() -> AsyncIterator[PageGuard]:
    async with guarded_browser() as guarded:
        yield guarded


async def wire(page: Page, path: str = "probe.call") -> dict[str, Any]:
    value: dict[str, Any] = await page.evaluate(WIRE_JS, path)
    return value


async def held_while_heard(page: Page, path: str, generation: int) -> dict[str, int]:
    """Wait until the page's connection of ``generation`` heard two seconds of the device;
    return what the page sent on it meanwhile (since that connection was made)."""
    start = await poll_js(
        page,
        WIRE_JS,
        lambda w: w["generation"] >= generation and w["state"] == "connected",
        arg=path,
        seconds=30,
    )
    done = await poll_js(
        page, WIRE_JS, lambda w: w["heard"] >= start["heard"] + 100, arg=path, seconds=30
    )
    assert done["generation"] == start["generation"], "another restart happened meanwhile"
    return {"audio": done["audio"], "video": done["video"]}


async def resumes(page: Page, path: str, since: float) -> dict[str, float]:
    """Poll the page's statistics until both kinds leave again; seconds from ``since`` to the
    poll that first saw each (an upper bound: the stats are read every ~50 ms)."""
    firsts: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while len(firsts) < 2:
        assert time.monotonic() < deadline, f"media did not resume: {await wire(page, path)}"
        now = await wire(page, path)
        for kind in ("audio", "video"):
            if now[kind] > 0 and kind not in firsts:
                firsts[kind] = round(time.monotonic() - since, 3)
    return firsts


@pytest.mark.parametrize("restart_by", ["page", "device"])
async def test_mute_and_camera_off_hold_through_an_ice_restart_and_a_reconnect(
    server: ServerHandle, pages: PageGuard, restart_by: str
) -> None:
    door = Participant(
        server.base_url, server.api_key, server.user_token("door"), "door", CALL_ID,
        audio=ToneTrack(697.0), receive_video=True, gate_open=True,
    )  # fmt: skip
    pages.allow(server.base_url)
    page = await pages.new_page()
    await page.goto(f"{server.base_url}/probe.html")
    await wait_for_js(page, "() => window.appliance !== undefined")
    args = {
        "apiKey": server.api_key,
        "token": server.user_token("alice"),
        "callId": CALL_ID,
        "media": {"audio": True, "video": {"width": 320, "height": 240}},
    }
    try:
        if restart_by == "page":  # the newcomer offers and owns restarts
            await door.media.start()
            await page.evaluate(JOIN_JS, args)
        else:
            await page.evaluate(JOIN_JS, args)
            await door.media.start()
        await poll.until(lambda: bool(door.media.peers), within=20.0)
        door_peer = next(iter(door.media.peers.values()))
        assert door_peer.offerer is (restart_by == "device")
        # Live: the page sends both (so the counters below can move).
        await poll_js(
            page, WIRE_JS, lambda w: w["audio"] > 50 and w["video"] > 10, arg="probe.call"
        )

        await page.evaluate(
            "window.probe.call.setMicrophone(false); window.probe.call.setCamera(false)"
        )
        await wait_for_js(page, MIC_SENDER_IS_EMPTY.replace("applianceConsole", "probe"))
        await wait_for_js(page, CAM_SENDER_IS_EMPTY.replace("applianceConsole", "probe"))

        if restart_by == "page":
            await page.evaluate("[...window.probe.call.peers.values()][0].restart()")
        else:
            await door_peer.restart("test")
        after_restart = await held_while_heard(page, "probe.call", 1)

        # The event connection drops and comes back (the peer connection stays).
        await page.evaluate("window.probe.connection._ws.close()")
        await wait_for_js(page, "window.probe.reconnects === 1", seconds=30)
        after_reconnect = await held_while_heard(page, "probe.call", 1)
        assert after_restart == {"audio": 0, "video": 0}
        assert after_reconnect == {"audio": 0, "video": 0}

        unmuted = time.monotonic()
        await page.evaluate(
            "window.probe.call.setMicrophone(true); window.probe.call.setCamera(true)"
        )
        first = await resumes(page, "probe.call", unmuted)
        print(
            f"privacy-figure browser, ICE restart by the {restart_by} then a reconnect: "
            f"sent_while_muted={after_reconnect}, first_packet_after_unmute_s<={first}"
        )
    finally:
        await door.close()


# --------------------------------------------------------------------------- the console itself

SENDER_BEHIND_ITS_BACK_JS = """
async () => {
  const call = window.applianceConsole.call;
  const peer = [...call.peers.values()][0];
  const track = call.media.track('audio');
  track.enabled = true;
  const t = peer.pc.getTransceivers().find((x) => x.receiver.track.kind === 'audio');
  await t.sender.replaceTrack(track);
}
"""


async def test_console_mute_and_camera_off_hold_and_the_buttons_show_the_wire(
    srv: ServerHandle,  # noqa: F811
    guard: PageGuard,  # noqa: F811
) -> None:
    """The console calls a device (a call.js page that answers); Mute and Camera off in the
    console, then ICE restarts (by whichever side offered) and the console's event connection
    drops and comes back."""
    door = await device_page(guard, srv, "door-1", answer=True)
    alice = await sign_in(guard, srv, "alice")
    await alice.locator('.device[data-user-id="door-1"] button.call-device').click()
    await expect(alice.locator("#incall")).to_have_attribute("data-state", "connected")
    path = "applianceConsole.call"
    await poll_js(alice, WIRE_JS, lambda w: w["audio"] > 50 and w["video"] > 10, arg=path)
    mic, cam = alice.locator("#btn-mic"), alice.locator("#btn-cam")
    await expect(mic).to_have_text("Mute")

    await mic.click()
    await cam.click()
    for button, text in ((mic, "Unmute"), (cam, "Camera on")):
        await expect(button).to_have_text(text)
        await expect(button).to_have_attribute("aria-pressed", "true")
    await wait_for_js(alice, MIC_SENDER_IS_EMPTY)
    await wait_for_js(alice, CAM_SENDER_IS_EMPTY)

    # Whoever joined second offered and owns restarts: the console or the device.
    offers = "[...window.%s.call.peers.values()][0].offerer"
    console_offers = await alice.evaluate(offers % "applianceConsole")
    assert console_offers != await door.evaluate(offers % "device")
    offerer, name = (alice, "applianceConsole") if console_offers else (door, "device")
    await offerer.evaluate(f"[...window.{name}.call.peers.values()][0].restart()")
    after_restart = await held_while_heard(alice, path, 1)
    await alice.evaluate("window.applianceConsole.connection._ws.close()")
    await expect(alice.locator("#link-state")).to_have_text("online", timeout=20000)
    after_reconnect = await held_while_heard(alice, path, 1)
    assert after_restart == {"audio": 0, "video": 0} == after_reconnect
    await expect(mic).to_have_text("Unmute")
    await expect(cam).to_have_text("Camera on")

    # Something puts the microphone back on the wire behind the console's back: the button
    # says so (the next statistics tick re-reads the senders), and pressing it mutes again.
    await alice.evaluate(SENDER_BEHIND_ITS_BACK_JS)
    await expect(mic).to_have_text("Mute")
    await expect(mic).to_have_attribute("aria-pressed", "false")
    await mic.click()
    await expect(mic).to_have_text("Unmute")
    await wait_for_js(alice, MIC_SENDER_IS_EMPTY)

    unmuted = time.monotonic()
    await mic.click()
    await cam.click()
    first = await resumes(alice, path, unmuted)
    await expect(mic).to_have_text("Mute")
    await expect(cam).to_have_text("Camera off")
    print(
        f"privacy-figure console, ICE restart by the {name} then a reconnect: "
        f"sent_while_muted={after_reconnect}, first_packet_after_unmute_s<={first}"
    )
