"""Acceptance of issue #6 with the real appliance daemon (`appliance run`) on the other side.

The daemon runs as its own process with an embedded call server, mock pins, the `test` camera
(320x240, 15 fps, a frame counter drawn into every picture) and ALSA ``file`` devices. Chromium
(fake camera; its microphone is a WAV tone) signs in to the console the daemon's server serves.

- intercom: ``appliance press call`` → the console rings → Accept → the console decodes the
  kiosk's H.264 (block-code counters increase) and the kiosk's ALSA playback file holds the
  browser's tone → Unlock → the relay pulses and the console shows the result → the kiosk hangs up
  after the unlock → both idle;
- bedside: the console calls the unit, which auto-answers an allow-listed user; then hang up.

The intercom's call is also created with a server token as an administrator would; the bedside
unit's call exists only because the daemon get-or-creates its configured call at start.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import socket
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio
import yaml
from playwright.async_api import Page, expect

from appliance.server.auth import create_token
from appliance.server.web import TEST_PAGES_DIR
from tests.support.alsa import AlsaSandbox
from tests.support.browser import PageGuard, guarded_browser, wait_for_js
from tests.support.tone import dominant_frequency, tone_samples, write_tone_file

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
# A loaded 2-core CI box: give the browser time before calling a UI step failed.
expect.set_options(timeout=15_000)

BROWSER_TONE_HZ = 880.0
API_KEY = "appliance"
START_TIMEOUT = 40.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wav(path: Path, freq: float, seconds: float) -> Path:
    samples = tone_samples(freq, seconds, rate=48000, amplitude=0.5)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes(samples.astype("<i2").tobytes())
    return path


class Daemon:
    """``appliance run`` in a subprocess, driven with ``appliance press`` / ``appliance status``."""

    def __init__(self, tmp: Path, name: str, config: dict[str, Any]) -> None:
        self.dir = tmp / name
        self.device_id = config["device"]["id"]
        self.dir.mkdir(parents=True)
        self.port = _free_port()
        self.secret = secrets.token_urlsafe(32)
        secret_file = self.dir / "secret"
        secret_file.write_text(self.secret)
        self.alsa = AlsaSandbox(self.dir / "alsa")
        mic = write_tone_file(self.dir / "mic.raw", 523.0, 120.0)
        self.alsa.capture_from("mic", mic)
        self.speaker_file = self.dir / "speaker.raw"
        self.alsa.playback_to("speaker", self.speaker_file)
        config["server"] = {
            "embedded": {
                "host": "127.0.0.1",
                "port": self.port,
                "api_key": API_KEY,
                "secret_file": str(secret_file),
                "users": [
                    {"id": "alice", "name": "Alice", "role": "user"},
                    {"id": "bob", "name": "Bob", "role": "user"},
                ],
            }
        }
        config["pin_factory"] = "mock"
        config["state_dir"] = str(self.dir / "state")
        config["media"] = {
            "camera": {"source": "test", "width": 320, "height": 240, "fps": 15, "bitrate": 400000},
            "display": False,
            "audio": {"capture_device": "mic", "playback_device": "speaker"},
        }
        config["sounds"] = {"chime": "none", "ringback": "none", "pre_announce": "none"}
        self.config_path = self.dir / "device.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = self.dir / "daemon.log"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.alsa.env(), "PYTHONUNBUFFERED": "1"}

    def login_link(self, user: str) -> str:
        token = create_token(self.secret, user)
        return f"{self.base_url}/?api_key={API_KEY}&token={token}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance",
            *args,
            "--config",
            str(self.config_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
        )
        out, err = await proc.communicate()
        assert proc.returncode == 0, (
            f"appliance {' '.join(args)}: {err.decode()}\n{self.log_text()}"
        )
        return out.decode()

    async def ensure_call(self, call: dict[str, Any]) -> None:
        """Get-or-create the device's call without ringing, as an administrator would (the
        console lists a device through the calls it shares with the user)."""
        cid = call["id"].format(device=self.device_id)
        members = []
        for spec in [*call["members"], self.device_id]:
            user, _, role = spec.partition(":")
            members.append({"user_id": user, "role": role or "call_member"})
        body = {"data": {"created_by_id": self.device_id, "members": members}}
        if call.get("custom"):
            body["data"]["custom"] = call["custom"]
        headers = {"Authorization": create_token(self.secret), "stream-auth-type": "jwt"}
        async with httpx.AsyncClient(base_url=self.base_url, headers=headers) as http:
            r = await http.post(
                f"/api/v2/video/call/{call['type']}/{cid}", params={"api_key": API_KEY}, json=body
            )
            assert r.status_code in (200, 201), r.text

    async def status(self) -> dict[str, Any]:
        """``appliance status --json`` (a subprocess: what an operator runs)."""
        result: dict[str, Any] = json.loads(await self.cli("status", "--json"))
        return result

    async def _poll(self) -> dict[str, Any]:
        # The same control socket the CLI talks to, without a Python start-up per poll.
        from appliance.daemon.control import SOCKET_NAME, request

        reply = await asyncio.to_thread(
            request, self.dir / "state" / SOCKET_NAME, {"cmd": "status"}, 5.0
        )
        result: dict[str, Any] = reply["status"]
        return result

    async def wait_status(self, what: str, check: Any, seconds: float = 30.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        status: dict[str, Any] = {}
        while loop.time() < deadline:
            try:
                status = await self._poll()
            except Exception:  # not up yet: no socket or token file
                status = {}
            if status and check(status):
                return status
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"daemon never reached {what}; last status {status}\n{self.log_text()}"
        )

    async def __aenter__(self) -> Daemon:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "appliance",
            "run",
            "--config",
            str(self.config_path),
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env(),
        )
        log.close()
        await self.wait_status("online", lambda s: s.get("server_link") == "online", START_TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@pytest_asyncio.fixture
async def guard(tmp_path: Path) -> AsyncIterator[PageGuard]:
    tone = _wav(tmp_path / "browser-mic.wav", BROWSER_TONE_HZ, 10.0)
    async with guarded_browser([f"--use-file-for-fake-audio-capture={tone}"]) as pages:
        yield pages


async def sign_in(guard: PageGuard, daemon: Daemon, user: str) -> Page:
    guard.allow(daemon.base_url)
    page = await guard.new_page()
    # The daemon's embedded server serves no test pages: the block-code reader the checks import
    # comes from the source tree, at the server's origin (the console's policy: scripts from
    # 'self' only).
    reader = TEST_PAGES_DIR / "blockcode.js"
    await page.route(f"{daemon.base_url}/blockcode.js", lambda route: route.fulfill(path=reader))
    await page.goto(daemon.login_link(user))
    await expect(page.locator("#link-state")).to_have_text("online")
    return page


READ_COUNTERS_JS = """
async (ms) => {
  const {FrameCodeReader} = await import('/blockcode.js');
  const reader = new FrameCodeReader(document.querySelector('#remote-video'));
  reader.start();
  await new Promise((r) => setTimeout(r, ms));
  reader.stop();
  return {counters: reader.counters, seen: reader.framesSeen, ages: reader.codes.map((c) => c.ageMs)};
}
"""


async def assert_video_decodes(page: Page) -> None:
    await wait_for_js(page, "document.querySelector('#remote-video').videoWidth > 0", seconds=20)
    got = await page.evaluate(READ_COUNTERS_JS, 2500)
    counters = got["counters"]
    assert len(counters) >= 10, got
    # Increasing; a frame may be presented twice under load, never an older one after a newer.
    assert all(b >= a for a, b in itertools.pairwise(counters)), counters
    assert len(set(counters)) >= 10 and counters[-1] > counters[0], counters
    stats = await page.evaluate("window.applianceConsole.call.stats()")
    assert stats["videoCodec"] == "video/H264", stats


async def speaker_frequency(daemon: Daemon, seconds: float = 20.0) -> float:
    """The dominant frequency of the last second the daemon played, once it played 2 s."""
    need = 48000 * 2 * 2
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        size = daemon.speaker_file.stat().st_size if daemon.speaker_file.exists() else 0
        if size >= need:
            break
        await asyncio.sleep(0.25)
    data = daemon.speaker_file.read_bytes()
    assert len(data) >= need, f"the kiosk played only {len(data)} bytes\n{daemon.log_text()}"
    samples = np.frombuffer(data[-48000 * 2 :], dtype="<i2")
    return float(dominant_frequency(samples, rate=48000))


INTERCOM: dict[str, Any] = {
    "device": {"id": "entrance", "name": "Front door", "model": "intercom"},
    "call": {
        "type": "default",
        "id": "door-{device}",
        "members": ["alice:admin", "bob:call_member"],
        "custom": {"location": "main entrance"},
    },
    "mode": "call",
    "buttons": [{"name": "call", "pin": 17, "press": "toggle", "hold": "hangup"}],
    "leds": {"status": {"pin": 27}, "camera_live": {"pin": 22}},
    "relay": {
        "pin": 23,
        "pulse_ms": 300,
        "unlock_roles": ["admin"],
        "min_interval_s": 1,
        "hangup_after_unlock_s": 2,
    },
}

BEDSIDE: dict[str, Any] = {
    "device": {"id": "bed-12", "name": "Bed 12", "model": "bedside"},
    "call": {"type": "default", "id": "room-{device}", "members": ["alice", "bob"]},
    "mode": "answer",
    "auto_answer": {"users": ["alice"], "delay_s": 0.5},
    "buttons": [{"name": "answer", "pin": 17, "press": "answer", "hold": "hangup"}],
    "leds": {"status": {"pin": 27}, "camera_live": {"pin": 22}},
}


CAN_UNLOCK_JS = """
(cid) => {
  const app = window.applianceConsole;
  return app.control.canUnlock(app.directory.device('entrance'), cid);
}
"""


async def test_press_call_answer_see_hear_unlock_and_hang_up(
    tmp_path: Path, guard: PageGuard
) -> None:
    async with Daemon(tmp_path, "intercom", dict(INTERCOM)) as kiosk:
        # The admin path: the call is also created with a server token, as an administrator
        # would (the daemon get-or-creates it itself too; whoever comes second finds it).
        await kiosk.ensure_call(INTERCOM["call"])
        alice = await sign_in(guard, kiosk, "alice")
        bob = await sign_in(guard, kiosk, "bob")
        for page in (alice, bob):
            await expect(page.locator('.device[data-user-id="entrance"]')).to_have_attribute(
                "data-online", "true"
            )
        # The daemon publishes relay.unlock_roles ([admin]) in custom.device: the console offers
        # Unlock to Alice (admin) and not to Bob (call_member).
        cid = "default:door-entrance"
        assert await alice.evaluate(CAN_UNLOCK_JS, cid) is True
        assert await bob.evaluate(CAN_UNLOCK_JS, cid) is False

        await kiosk.cli("press", "call")
        card = alice.locator('.ring-card[data-cid="default:door-entrance"]')
        await expect(card).to_be_visible(timeout=15000)
        await expect(card.locator(".ring-caller")).to_have_text("Front door")
        await expect(card.locator(".ring-custom")).to_contain_text("main entrance")
        await card.locator("button.accept").click()

        await expect(alice.locator("#incall")).to_have_attribute(
            "data-state", "connected", timeout=20000
        )
        await assert_video_decodes(alice)
        await kiosk.wait_status("in_call", lambda s: s["call_state"] == "in_call")
        freq = await speaker_frequency(kiosk)
        assert abs(freq - BROWSER_TONE_HZ) < 15, freq

        await expect(alice.locator("#btn-unlock")).to_be_visible()
        await alice.locator("#btn-unlock").click()
        await alice.locator("#btn-unlock").click()  # "Confirm unlock"
        await expect(alice.locator("#call-message")).to_contain_text("Door unlocked", timeout=10000)
        await kiosk.wait_status("relay pulse", lambda s: (s["relay"] or {}).get("pulses") == 1)

        # The kiosk hangs up hangup_after_unlock_s after the unlock; the console follows.
        await expect(alice.locator("#incall")).to_be_hidden(timeout=20000)
        await kiosk.wait_status("idle", lambda s: s["call_state"] == "idle")
        final = await kiosk.status()
        assert final["call_state"] == "idle" and final["relay"]["pulses"] == 1, final
        await expect(alice.locator('.device[data-user-id="entrance"]')).to_be_visible()
        assert await alice.locator(".ring-card").count() == 0


async def test_console_calls_the_bedside_unit_which_auto_answers_an_allowed_user(
    tmp_path: Path, guard: PageGuard
) -> None:
    async with Daemon(tmp_path, "bedside", dict(BEDSIDE)) as unit:
        # No one creates the call but the daemon itself (get-or-create at start, no ring):
        # the console lists the unit before it ever rang, and calls it.
        alice = await sign_in(guard, unit, "alice")
        bed = alice.locator('.device[data-user-id="bed-12"]')
        await expect(bed).to_have_attribute("data-online", "true")
        assert await alice.locator(".ring-card").count() == 0
        await bed.locator("button.call-device").click()

        await expect(alice.locator("#incall")).to_have_attribute(
            "data-state", "connected", timeout=25000
        )
        await assert_video_decodes(alice)
        status = await unit.wait_status("in_call", lambda s: s["call_state"] == "in_call")
        assert status["caller"] in ("alice", None) or "alice" in str(status["caller"])
        # No relay on a bedside unit: no Unlock button.
        await expect(alice.locator("#btn-unlock")).to_be_hidden()

        await alice.locator("#btn-hangup").click()
        await expect(alice.locator("#incall")).to_be_hidden()
        await unit.wait_status("idle", lambda s: s["call_state"] == "idle")


async def test_a_second_resident_joins_the_units_call_and_sees_it_too(
    tmp_path: Path, guard: PageGuard
) -> None:
    """Three in one call with the real daemon: its media (one peer connection per participant)
    carries the unit's picture to both, and the daemon knows who else joined (issue #11)."""
    async with Daemon(tmp_path, "bedside", dict(BEDSIDE)) as unit:
        alice = await sign_in(guard, unit, "alice")
        await alice.locator('.device[data-user-id="bed-12"] button.call-device').click()
        await expect(alice.locator("#incall")).to_have_attribute(
            "data-state", "connected", timeout=25000
        )
        await unit.wait_status("in_call", lambda s: s["call_state"] == "in_call")

        bob = await sign_in(guard, unit, "bob")
        bed = bob.locator('.device[data-user-id="bed-12"]')
        await expect(bed.locator(".busy")).to_have_text("Busy — in a call with Alice")
        await bed.locator("button.call-device").click()
        ask = bob.locator('.ring-card[data-cid="default:room-bed-12"]')
        await expect(ask.locator(".ring-state")).to_have_text("Join the call with Alice?")
        await ask.locator("button.accept").click()
        await expect(bob.locator("#incall")).to_have_attribute(
            "data-state", "connected", timeout=25000
        )
        await expect(alice.locator("#call-message")).to_have_text("Bob joined")
        await assert_video_decodes(bob)  # the unit's picture reaches the newcomer ...
        await assert_video_decodes(alice)  # ... and stays on the first resident's screen
        for page in (alice, bob):
            assert await page.locator("#remote-name").text_content() == "Bed 12"
            await expect(page.locator("#tiles .tile")).to_have_count(1)
        status = await unit.wait_status(
            "three in the call",
            lambda s: (
                s["participants"] == ["alice", "bed-12", "bob"]
                and list(s["audio"]["peers"].values()) == ["connected", "connected"]
            ),
        )
        assert status["call_state"] == "in_call", status

        await bob.locator("#btn-hangup").click()
        await expect(alice.locator("#call-message")).to_have_text("Bob left")
        await expect(alice.locator("#incall")).to_have_attribute("data-state", "connected")
        await alice.locator("#btn-hangup").click()
        await expect(alice.locator("#incall")).to_be_hidden()
