"""Rings that reach a person whose console is closed (issue #11), in headless Chromium.

- "Ring me on this device": the first-run state, the one click that unlocks the ringtone, asks
  for notifications and registers a push subscription with the server; the sign-in it keeps on
  the device (a new tab opens signed in), and sign-out removing the subscription everywhere.
- End to end with the real appliance daemon: the kiosk's CALL button → the server's encrypted
  pushes reach the push-service stand-in for both residents → their service workers show the
  ring → one accepts from the notification and the console opens into the call → the other's
  ``call.ring_stopped`` arrives and closes the notification; a decline from the notification
  rejects the ring.

The browser's ``pushManager.subscribe`` is replaced by a subscription whose endpoint is the
stand-in (``tests/support/pushservice.py``; keys made by the test): no machine here reaches a real
push service. What the stand-in receives (and decrypts, as the browser would) is delivered to the
worker through the DevTools protocol (``test_console_worker.PushChannel``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page, expect

from appliance.server.settings import DEFAULT_PUSH_HOSTS
from tests.support.browser import PageGuard, guarded_browser, wait_for_js
from tests.support.pushservice import PushService
from tests.support.server import ServerHandle, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
expect.set_options(timeout=15_000)

USERS: list[dict[str, Any]] = [
    {"id": "alice", "name": "Alice"},
    {"id": "bob", "name": "Bob"},
    {"id": "door-1", "name": "Front door", "custom": {"device": {"model": "intercom"}}},
]

# pushManager's subscribe/getSubscription answer with the test's subscription (its endpoint is
# the stand-in); unsubscribe forgets it. Kept in localStorage so that it outlives a tab, as a
# real subscription does.
SUBSCRIBE_STUB_JS = """
(() => {
  const SUB = __SUB__;
  const KEY = 'test.push-subscription';
  const make = (stored) => ({
    endpoint: stored.json.endpoint,
    expirationTime: null,
    options: {userVisibleOnly: true, applicationServerKey: new Uint8Array(stored.key).buffer},
    toJSON: () => stored.json,
    unsubscribe: async () => { localStorage.removeItem(KEY); return true; },
  });
  const read = () => JSON.parse(localStorage.getItem(KEY) || 'null');
  PushManager.prototype.subscribe = async function (options) {
    if (!options || options.userVisibleOnly !== true) throw new DOMException('userVisibleOnly', 'NotAllowedError');
    if (Notification.permission !== 'granted') throw new DOMException('no permission', 'NotAllowedError');
    const stored = {json: SUB, key: Array.from(new Uint8Array(options.applicationServerKey))};
    localStorage.setItem(KEY, JSON.stringify(stored));
    return make(stored);
  };
  PushManager.prototype.getSubscription = async function () {
    const stored = read();
    return stored ? make(stored) : null;
  };
})();
"""


@pytest_asyncio.fixture
async def push() -> AsyncIterator[PushService]:
    async with PushService() as service:
        yield service


@pytest_asyncio.fixture
async def guard() -> AsyncIterator[PageGuard]:
    async with guarded_browser() as pages:
        yield pages


async def push_context(
    guard: PageGuard, origin: str, push: PushService, user: str
) -> tuple[BrowserContext, dict[str, Any]]:
    """A browser profile of ``user`` that may show notifications; its push subscription."""
    sub, _key = push.make_subscription(user)
    guard.allow(origin)
    context = await guard.new_context()
    await context.grant_permissions(["notifications"], origin=origin)
    await context.add_init_script(SUBSCRIBE_STUB_JS.replace("__SUB__", json.dumps(sub)))
    return context, sub


async def open_console(context: BrowserContext, guard: PageGuard, url: str) -> Page:
    page = await guard.new_page(context)
    await page.goto(url)
    await expect(page.locator("#link-state")).to_have_text("online")
    await wait_for_js(page, "navigator.serviceWorker.controller !== null")
    return page


async def ring_me(page: Page) -> None:
    """The first-run step, as a person does it."""
    setup = page.locator("#ring-setup")
    await expect(setup).to_have_class("ring-setup first-run")
    await setup.locator("#ring-setup-enable").click()
    steps = setup.locator("#ring-setup-steps li")
    await expect(steps.last).to_contain_text("This device rings for")
    await expect(setup).to_have_attribute("data-state", "enabled")


async def device_ids(srv: ServerHandle, user: str) -> list[str]:
    async with srv.client() as admin:
        r = await admin.get("/api/v2/devices", params={"user_id": user})
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["devices"]]


@pytest_asyncio.fixture
async def srv(tmp_path: Path, push: PushService) -> AsyncIterator[ServerHandle]:
    async with running_server(
        tmp_path, users=USERS, push={"allowed_hosts": [*DEFAULT_PUSH_HOSTS, push.origin]}
    ) as handle:
        yield handle


async def test_ring_me_on_this_device_registers_remembers_and_sign_out_removes_it(
    srv: ServerHandle, push: PushService, guard: PageGuard
) -> None:
    context, sub = await push_context(guard, srv.base_url, push, "alice")
    token = srv.user_token("alice")
    page = await open_console(
        context, guard, f"{srv.base_url}/?api_key={srv.api_key}&token={token}"
    )

    # First run: the card is the first thing under the header, and nothing is registered.
    setup = page.locator("#ring-setup")
    await expect(setup).to_have_class("ring-setup first-run")
    await expect(setup.locator("#ring-setup-enable")).to_be_visible()
    assert await device_ids(srv, "alice") == []
    assert await page.evaluate("localStorage.getItem('appliance.remembered')") is None

    await ring_me(page)
    steps = await setup.locator("#ring-setup-steps li").all_inner_texts()
    kinds = await setup.locator("#ring-setup-steps li").evaluate_all(
        "(items) => items.map((item) => item.dataset.kind)"
    )
    assert kinds == ["ok", "ok", "ok"], steps
    assert "ringtone is on" in steps[0]
    assert "Notifications are allowed" in steps[1]
    assert "stays signed in until you sign out here" in steps[2]  # the link's token has no exp
    assert await page.evaluate("window.applianceConsole.ringtone.context !== null")
    assert await device_ids(srv, "alice") == [sub["endpoint"]]

    # The tab is closed; a new one opens signed in, and the card says this device rings.
    await page.close()
    page = await open_console(context, guard, srv.base_url + "/")
    await expect(page.locator("#me")).to_have_text("Alice")
    await expect(page.locator("#ring-setup")).to_have_attribute("data-state", "enabled")
    await expect(page.locator("#ring-setup-disable")).to_be_visible()
    await expect(page.locator("#ring-setup-enable")).to_be_hidden()
    worker = context.service_workers[0]
    stored = await worker.evaluate("self.applianceWorker.readCredentials()")
    assert stored == {"apiKey": srv.api_key, "token": token}

    # Sign out on this device: the server forgets the subscription, the device the sign-in.
    await page.locator("#signout").click()
    await expect(page.locator("#signin")).to_be_visible()
    assert await device_ids(srv, "alice") == []
    assert await worker.evaluate("self.applianceWorker.readCredentials()") is None
    assert await page.evaluate("localStorage.getItem('appliance.remembered')") is None
    assert await page.evaluate("localStorage.getItem('test.push-subscription')") is None
    await page.goto(srv.base_url + "/")
    await expect(page.locator("#signin")).to_be_visible()


async def test_blocked_notifications_say_how_to_fix_it_and_register_nothing(
    srv: ServerHandle, push: PushService, guard: PageGuard
) -> None:
    sub, _key = push.make_subscription("alice")
    guard.allow(srv.base_url)
    context = await guard.new_context()  # notifications not granted: headless denies them
    await context.add_init_script(SUBSCRIBE_STUB_JS.replace("__SUB__", json.dumps(sub)))
    link = f"{srv.base_url}/?api_key={srv.api_key}&token={srv.user_token('alice')}"
    page = await open_console(context, guard, link)
    await page.locator("#ring-setup-enable").click()
    failed = page.locator('#ring-setup-steps li[data-kind="fail"]')
    await expect(failed).to_contain_text("Notifications")
    await expect(page.locator("#ring-setup")).to_have_class("ring-setup first-run")
    assert await device_ids(srv, "alice") == []
    assert await page.evaluate("localStorage.getItem('appliance.remembered')") is None
