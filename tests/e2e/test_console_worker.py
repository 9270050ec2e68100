"""The console's service worker in headless Chromium: rings as notifications (issue #11, item 4).

Pushes reach the worker the way a browser's push service would deliver them, through the DevTools
protocol (``ServiceWorker.deliverPushMessage``); the payloads are the server's Web Push payloads
(README "Push notifications"). A test cannot click a system notification, so the worker's
``notificationclick`` handler is run with the real notification from
``registration.getNotifications()`` and the action a person would pick; ``clients.openWindow``
(which a browser allows only inside a real click) is recorded instead, and the test then opens
the address the worker asked for.

The server is real: the rings, the decline from the notification and the accept are checked in
the call's stored session. The whole path from a pressed door button through the server's pushes
is in ``test_console_push.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, Worker, async_playwright, expect

from appliance.client import Client
from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    PageGuard,
    guarded_browser,
    poll_js,
    wait_for_js,
)
from tests.support.server import ServerHandle, running_server
from tests.support.serviceworker import (
    HIDDEN_JS,
    STORE_CREDENTIALS_JS,
    PushChannel,
    click_notification,
    notifications,
    service_worker,
    wait_notifications,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
expect.set_options(timeout=15_000)

USERS: list[dict[str, Any]] = [
    {"id": "alice", "name": "Alice"},
    {"id": "bob", "name": "Bob"},
    {"id": "door-1", "name": "Front door", "custom": {"device": {"model": "intercom"}}},
]
CID = "default:door-1"
DOOR = "/api/v2/video/call/default/door-1"


@pytest_asyncio.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path, users=USERS) as handle:
        async with handle.client() as admin:
            r = await admin.post(
                DOOR,
                json={
                    "data": {
                        "created_by_id": "door-1",
                        "members": [
                            {"user_id": "alice"},
                            {"user_id": "bob"},
                            {"user_id": "door-1"},
                        ],
                        "custom": {"location": "Main entrance"},
                        "settings_override": {
                            "ring": {
                                "incoming_call_timeout_ms": 60000,
                                "auto_cancel_timeout_ms": 60000,
                            }
                        },
                    }
                },
            )
            assert r.status_code in (200, 201), r.text
        yield handle


@pytest_asyncio.fixture
async def guard() -> AsyncIterator[PageGuard]:
    async with guarded_browser() as pages:
        yield pages


async def resident(guard: PageGuard, srv: ServerHandle, user: str) -> Page:
    """A console signed in as ``user``, notifications allowed, its service worker in control."""
    guard.allow(srv.base_url)
    context = await guard.new_context()
    await context.grant_permissions(["notifications"], origin=srv.base_url)
    page = await guard.new_page(context)
    await page.goto(f"{srv.base_url}/?api_key={srv.api_key}&token={srv.user_token(user)}")
    await expect(page.locator("#link-state")).to_have_text("online")
    await wait_for_js(page, "navigator.serviceWorker.controller !== null")
    return page


async def door_rings(srv: ServerHandle) -> dict[str, Any]:
    """The door rings its call (as the daemon does); returns the push payload the server sends."""
    async with Client(srv.base_url, srv.api_key, srv.user_token("door-1")) as client:
        await client.call("default", "door-1").ring(video=True)
    async with srv.client() as admin:
        r = await admin.get(DOOR)
    state = r.json()
    session = state["call"]["session"]
    return {
        "type": "call.ring",
        "call_cid": CID,
        "session_id": session["id"],
        "caller": {"id": "door-1", "name": "Front door"},
        "custom": {"location": "Main entrance"},
        "video": True,
        "created_at": state["call"]["updated_at"],
        "expires_at": "",
    }


async def session_of(srv: ServerHandle) -> dict[str, Any]:
    async with srv.client() as admin:
        r = await admin.get(DOOR)
    assert r.status_code == 200, r.text
    session: dict[str, Any] = r.json()["call"]["session"]
    return session


async def session_when(
    srv: ServerHandle, check: Callable[[dict[str, Any]], bool], within: float = 15.0
) -> dict[str, Any]:
    """The call's session once ``check`` holds for it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    session = await session_of(srv)
    while not check(session):
        assert loop.time() < deadline, session
        await asyncio.sleep(0.1)
        session = await session_of(srv)
    return session


async def closed_console(
    guard: PageGuard, srv: ServerHandle
) -> tuple[BrowserContext, Worker, PushChannel]:
    """Alice's browser after she signed in and closed the console: only the worker is left."""
    page = await resident(guard, srv, "alice")
    context = page.context
    worker = await service_worker(context)
    channel = await PushChannel.open(guard, context, srv.base_url)
    await page.close()
    return context, worker, channel


async def test_a_ring_push_to_a_closed_console_is_a_notification_and_decline_rejects_the_call(
    srv: ServerHandle, guard: PageGuard
) -> None:
    context, worker, channel = await closed_console(guard, srv)
    ring = await door_rings(srv)
    assert "alice" in (await session_of(srv))["ringing"]

    await channel.deliver(ring)
    [shown] = await wait_notifications(worker, lambda found: len(found) == 1, CID)
    assert shown["title"] == "Front door is calling"
    assert "location: Main entrance" in shown["body"]
    assert shown["tag"] == CID
    assert shown["requireInteraction"] is True
    assert shown["vibrate"], shown
    assert shown["actions"] == ["accept", "decline"]

    # The same ring again (a push service may deliver twice): still one notification.
    await channel.deliver(ring)
    assert len(await notifications(worker, CID)) == 1

    # Decline from the notification: the worker rejects with the credential... which this
    # console never stored (the user did not choose "Ring me on this device"), so it says so
    # and the ring goes on.
    opened = await click_notification(worker, CID, "decline")
    assert opened == []
    [failed] = await wait_notifications(
        worker, lambda found: bool(found) and found[0]["title"].startswith("Could not decline"), CID
    )
    assert "not signed in" in failed["body"]
    assert "alice" in (await session_of(srv))["ringing"]

    # With the credential the page leaves for the worker, the decline reaches the server and
    # no window opens.
    await worker.evaluate(STORE_CREDENTIALS_JS, [srv.api_key, srv.user_token("alice")])
    await channel.deliver(ring)
    opened = await click_notification(worker, CID, "decline")
    assert opened == []
    assert [p for p in context.pages if p.url.rstrip("/") == srv.base_url] == []
    session = await session_when(srv, lambda s: "alice" in s.get("rejected_by", {}))
    assert "alice" not in session["ringing"], session
    assert await notifications(worker, CID) == []


async def test_ring_stopped_closes_the_notification_and_missed_becomes_missed_call(
    srv: ServerHandle, guard: PageGuard
) -> None:
    _context, worker, channel = await closed_console(guard, srv)
    ring = await door_rings(srv)
    stop = {"type": "call.ring_stopped", "call_cid": CID, "session_id": ring["session_id"]}

    # Answered elsewhere: the notification goes away.
    await channel.deliver(ring)
    await wait_notifications(worker, lambda found: len(found) == 1, CID)
    await channel.deliver({**stop, "reason": "accepted"})
    await wait_notifications(worker, lambda found: found == [], CID)

    # Missed: replaced by "Missed call", whose click opens the console's missed calls.
    await channel.deliver(ring)
    await wait_notifications(worker, lambda found: len(found) == 1, CID)
    await channel.deliver({**stop, "reason": "missed"})
    [missed] = await wait_notifications(
        worker, lambda found: len(found) == 1 and found[0]["data"]["kind"] == "missed", CID
    )
    assert missed["title"] == "Missed call from Front door"
    assert missed["actions"] == []
    opened = await click_notification(worker, CID, "")
    assert opened == [f"{srv.base_url}/#missed"]


async def test_a_ring_on_an_open_hidden_console_shows_the_notification_until_it_stops(
    srv: ServerHandle, guard: PageGuard
) -> None:
    guard.allow(srv.base_url)
    context = await guard.new_context()
    await context.grant_permissions(["notifications"], origin=srv.base_url)
    await context.add_init_script(HIDDEN_JS)
    page = await guard.new_page(context)
    await page.goto(f"{srv.base_url}/?api_key={srv.api_key}&token={srv.user_token('alice')}")
    await expect(page.locator("#link-state")).to_have_text("online")
    await wait_for_js(page, "navigator.serviceWorker.controller !== null")
    worker = await service_worker(context)

    channel = await PushChannel.open(guard, context, srv.base_url)

    # Visible: the page rings itself; the push for the same ring shows no notification.
    ring = await door_rings(srv)
    await expect(page.locator(f'.ring-card[data-cid="{CID}"]')).to_be_visible()
    await channel.deliver(ring)
    # A barrier: a notification the page asks for after that push; once it shows, the worker
    # has handled the push before it.
    barrier = {**ring, "call_cid": "default:barrier"}
    await page.evaluate(
        "(ring) => navigator.serviceWorker.controller.postMessage({type: 'ring', ring})", barrier
    )
    await wait_notifications(worker, lambda found: len(found) == 1, "default:barrier")
    assert await notifications(worker, CID) == []
    await worker.evaluate(
        "async () => (await self.registration.getNotifications()).forEach((n) => n.close())"
    )
    async with Client(srv.base_url, srv.api_key, srv.user_token("door-1")) as client:
        await client.call("default", "door-1").reject(reason="cancel")
    await expect(page.locator(f'.ring-card[data-cid="{CID}"]')).to_have_count(0)

    # Hidden: the ring from the WebSocket also becomes a notification...
    await page.evaluate("window.setTestHidden(true)")
    await door_rings(srv)
    await expect(page.locator(f'.ring-card[data-cid="{CID}"]')).to_be_visible()
    [shown] = await wait_notifications(worker, lambda found: len(found) == 1, CID)
    assert shown["title"] == "Front door is calling"
    # ...which closes when the caller gives up.
    async with Client(srv.base_url, srv.api_key, srv.user_token("door-1")) as client:
        await client.call("default", "door-1").reject(reason="cancel")
    await poll_js(page, "document.querySelectorAll('.ring-card').length", lambda n: n == 0)
    await wait_notifications(worker, lambda found: found == [], CID)

    # Hidden again, a new ring, Accept on the notification: the open console answers it (no
    # second window), and the server has alice's accept.
    await door_rings(srv)
    await wait_notifications(worker, lambda found: len(found) == 1, CID)
    assert await click_notification(worker, CID, "accept") == []
    await expect(page.locator("#incall")).to_be_visible()
    await session_when(srv, lambda s: "alice" in s.get("accepted_by", {}))
    assert [p for p in context.pages if urlsplit(p.url).path == "/"] == [page]


async def test_the_console_is_an_installable_app(srv: ServerHandle, tmp_path: Path) -> None:
    """Chromium's own installability check (the one behind "Install app" and Android's
    "Add to Home screen"): manifest, icons, display mode, service worker. A normal profile, not
    the tests' incognito contexts (which Chromium never offers to install from)."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await context.new_page()
            await page.goto(f"{srv.base_url}/")
            scope = await page.evaluate(
                "navigator.serviceWorker.ready.then((registration) => registration.scope)"
            )
            assert scope == f"{srv.base_url}/"
            cdp = await context.new_cdp_session(page)
            manifest = await cdp.send("Page.getAppManifest")
            assert manifest["url"] == f"{srv.base_url}/manifest.webmanifest"
            assert manifest["errors"] == []
            installability = await cdp.send("Page.getInstallabilityErrors")
            assert installability["installabilityErrors"] == []
        finally:
            await context.close()
