"""The console over HTTPS (phones need a secure page for camera and microphone), and what it
says and does on a plain-HTTP LAN address, where the browser gives it neither."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.support.browser import PageGuard, guarded_browser
from tests.support.poll import until
from tests.support.server import ServerHandle, running_server

pytestmark = pytest.mark.e2e
# A loaded 2-core CI box: give the browser time before calling a UI step failed.
expect.set_options(timeout=15_000)

USERS: list[dict[str, Any]] = [
    {"id": "alice", "name": "Alice"},
    {"id": "door-1", "name": "Front door", "custom": {"device": {"relay": True}}},
]
DOOR = "/api/v2/video/call/default/door-1"
LAN_NAME = "intercom.lan"


@pytest_asyncio.fixture
async def guard() -> AsyncIterator[PageGuard]:
    # A LAN-like host name for the plain-HTTP case: not loopback, so not a secure context.
    async with guarded_browser([f"--host-resolver-rules=MAP {LAN_NAME} 127.0.0.1"]) as pages:
        yield pages


async def _door_call(srv: ServerHandle) -> None:
    async with srv.client() as admin:
        r = await admin.post(
            DOOR,
            json={
                "data": {
                    "created_by_id": "door-1",
                    "members": [{"user_id": "alice"}, {"user_id": "door-1"}],
                }
            },
        )
        assert r.status_code in (200, 201), r.text


async def test_console_over_https_is_a_secure_page_and_rings(
    tmp_path: Path, guard: PageGuard
) -> None:
    async with running_server(tmp_path, users=USERS, subprocess=True, tls="self-signed") as srv:
        assert srv.base_url.startswith("https://")
        await _door_call(srv)
        guard.allow(srv.base_url)
        page = await guard.new_page()
        await page.goto(f"{srv.base_url}/?api_key={srv.api_key}&token={srv.user_token('alice')}")
        await expect(page.locator("#link-state")).to_have_text("online")
        assert await page.evaluate("window.isSecureContext")
        assert await page.evaluate(
            "window.applianceConsole.connection._ws.url.startsWith('wss://')"
        )
        await expect(page.locator("#insecure")).to_be_hidden()
        async with srv.client("door-1") as door:
            r = await door.post(f"{DOOR}/ring", json={})
            assert r.status_code == 200, r.text
        await expect(page.locator('.ring-card[data-cid="default:door-1"]')).to_be_visible()


async def test_plain_http_on_a_lan_address_says_why_there_is_no_camera(
    tmp_path: Path, guard: PageGuard
) -> None:
    async with running_server(tmp_path, users=USERS) as srv:
        await _door_call(srv)
        base = f"http://{LAN_NAME}:{srv.port}"
        guard.allow(base)
        page = await guard.new_page()
        await page.goto(f"{base}/?api_key={srv.api_key}&token={srv.user_token('alice')}")
        await expect(page.locator("#link-state")).to_have_text("online")
        assert not await page.evaluate("window.isSecureContext")
        await expect(page.locator("#insecure")).to_be_visible()
        await expect(page.locator("#insecure")).to_contain_text("HTTPS")
        # Answering still works, receive-only, and the call view says so.
        async with srv.client("door-1") as door:
            r = await door.post(f"{DOOR}/ring", json={})
            assert r.status_code == 200, r.text
        card = page.locator('.ring-card[data-cid="default:door-1"]')
        await expect(card).to_be_visible()
        await card.locator("button.accept").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#incall")).to_be_visible()
        await expect(page.locator("#call-message")).to_contain_text("Receive-only")
        await expect(page.locator("#btn-mic")).to_have_text("No microphone")
        await expect(page.locator("#btn-mic")).to_be_disabled()
        await page.keyboard.press("Alt+KeyH")
        await expect(page.locator("#incall")).to_be_hidden()


# A hidden tab whose timers Chrome throttles to one wake-up a minute: here no timer runs at all.
FROZEN_TIMERS_JS = "window.setInterval = () => 0;"


async def test_a_tab_whose_timers_do_not_run_stays_connected_and_rings(
    tmp_path: Path, guard: PageGuard
) -> None:
    async with running_server(tmp_path, users=USERS, ws_health_seconds=0.5) as srv:
        await _door_call(srv)
        guard.allow(srv.base_url)
        context = await guard.new_context()
        await context.add_init_script(FROZEN_TIMERS_JS)
        page = await guard.new_page(context)
        health_checks: list[str] = []
        page.on(
            "websocket",
            lambda ws: ws.on(
                "framereceived",
                lambda payload: (
                    health_checks.append("x") if '"health.check"' in str(payload) else None
                ),
            ),
        )
        await page.goto(f"{srv.base_url}/?api_key={srv.api_key}&token={srv.user_token('alice')}")
        await expect(page.locator("#link-state")).to_have_text("online")
        first = await page.evaluate("window.applianceConsole.connection.connectionId")
        # The server drops connections silent for three health intervals (1.5 s here): once it
        # sent four more health checks to this tab, the tab has outlived that.
        seen = len(health_checks)
        await until(lambda: len(health_checks) >= seen + 4, 15, what="four more health checks")
        assert await page.evaluate("window.applianceConsole.connection.connectionId") == first
        await expect(page.locator("#link-state")).to_have_text("online")
        async with srv.client("door-1") as door:
            r = await door.post(f"{DOOR}/ring", json={})
            assert r.status_code == 200, r.text
        await expect(page.locator('.ring-card[data-cid="default:door-1"]')).to_be_visible()
