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
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import pytest_asyncio
import yaml
from playwright.async_api import BrowserContext, Page, Worker, expect

from appliance.server.auth import create_token
from appliance.server.settings import DEFAULT_PUSH_HOSTS
from tests.e2e.test_console_daemon import API_KEY, INTERCOM, Daemon
from tests.support.browser import PHONE, PageGuard, guarded_browser, wait_for_js
from tests.support.pushservice import Message, PushService
from tests.support.server import ServerHandle, running_server
from tests.support.serviceworker import (
    PushChannel,
    click_notification,
    service_worker,
    wait_notifications,
)

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


async def test_stop_ringing_on_this_device_removes_the_subscription_and_keeps_the_tab_signed_in(
    srv: ServerHandle, push: PushService, guard: PageGuard
) -> None:
    context, sub = await push_context(guard, srv.base_url, push, "alice")
    link = f"{srv.base_url}/?api_key={srv.api_key}&token={srv.user_token('alice')}"
    page = await open_console(context, guard, link)
    await ring_me(page)
    assert await device_ids(srv, "alice") == [sub["endpoint"]]
    await page.locator("#ring-setup-disable").click()
    await expect(page.locator("#ring-setup")).to_have_class("ring-setup first-run")
    await expect(page.locator("#ring-setup-steps")).to_contain_text("no longer rings")
    assert await device_ids(srv, "alice") == []
    assert await page.evaluate("localStorage.getItem('appliance.remembered')") is None
    await page.reload()
    await expect(page.locator("#me")).to_have_text("Alice")
    await expect(page.locator("#ring-setup")).to_have_attribute("data-state", "off")


IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


async def test_an_iphone_safari_tab_is_told_to_add_the_console_to_the_home_screen(
    srv: ServerHandle, push: PushService, guard: PageGuard
) -> None:
    sub, _key = push.make_subscription("alice")
    guard.allow(srv.base_url)
    context = await guard.new_context(user_agent=IPHONE_UA, viewport=PHONE, has_touch=True)
    await context.grant_permissions(["notifications"], origin=srv.base_url)
    await context.add_init_script(SUBSCRIBE_STUB_JS.replace("__SUB__", json.dumps(sub)))
    link = f"{srv.base_url}/?api_key={srv.api_key}&token={srv.user_token('alice')}"
    page = await open_console(context, guard, link)
    await expect(page.locator("#ring-setup-steps")).to_contain_text("Add to Home Screen")
    # The click still turns the ringtone on for the open page, and registers nothing.
    await page.locator("#ring-setup-enable").click()
    await expect(page.locator("#ring-setup")).to_have_attribute("data-state", "sound-only")
    await expect(page.locator('#ring-setup-steps li[data-kind="fail"]')).to_contain_text(
        "iPhone and iPad"
    )
    assert await device_ids(srv, "alice") == []


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


# --- end to end: the kiosk's button, the server's pushes, two residents' closed consoles --------


async def kiosk_get(kiosk: Daemon, path: str, user: str | None = None) -> dict[str, Any]:
    """GET from the kiosk's embedded server as ``user`` (None: with a server token)."""
    token = create_token(kiosk.secret, user) if user else create_token(kiosk.secret)
    async with httpx.AsyncClient(base_url=kiosk.base_url) as http:
        r = await http.get(
            path,
            params={"api_key": API_KEY},
            headers={"Authorization": token, "stream-auth-type": "jwt"},
        )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def kiosk_with_push(tmp_path: Path, push: PushService) -> Daemon:
    """The intercom daemon (its embedded server) allowed to push to the stand-in."""
    kiosk = Daemon(tmp_path, "intercom", json.loads(json.dumps(INTERCOM)))
    config = yaml.safe_load(kiosk.config_path.read_text(encoding="utf-8"))
    config["server"]["embedded"]["push"] = {"allowed_hosts": [*DEFAULT_PUSH_HOSTS, push.origin]}
    kiosk.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return kiosk


class Resident:
    """A person's phone: a browser profile that chose "Ring me on this device", then closed
    the console; a non-console page of the origin carries the pushes to its worker."""

    def __init__(self, user: str, context: BrowserContext, sub: dict[str, Any]) -> None:
        self.user = user
        self.context = context
        self.sub = sub
        self.worker: Worker
        self.channel: PushChannel

    @classmethod
    async def set_up(
        cls, guard: PageGuard, kiosk: Daemon, push: PushService, user: str
    ) -> Resident:
        context, sub = await push_context(guard, kiosk.base_url, push, user)
        page = await open_console(context, guard, kiosk.login_link(user))
        await ring_me(page)
        resident = cls(user, context, sub)
        resident.worker = await service_worker(context)
        resident.channel = await PushChannel.open(guard, context, kiosk.base_url)
        await page.close()
        return resident


def is_ring(user: str) -> Callable[[Message], bool]:
    return lambda m: m.user == user and m.payload["type"] == "call.ring"


def is_stop(user: str, reason: str) -> Callable[[Message], bool]:
    return lambda m: (
        m.user == user
        and m.payload["type"] == "call.ring_stopped"
        and m.payload["reason"] == reason
    )


async def test_kiosk_call_reaches_both_residents_closed_consoles_one_accepts_other_stops(
    tmp_path: Path, push: PushService, guard: PageGuard
) -> None:
    cid = "default:door-entrance"
    async with await kiosk_with_push(tmp_path, push) as kiosk:
        await kiosk.ensure_call(INTERCOM["call"])
        app = await kiosk_get(kiosk, "/api/v2/app", "alice")
        push.vapid_public_key = app["app"]["web_push"]["vapid_public_key"]
        alice = await Resident.set_up(guard, kiosk, push, "alice")
        bob = await Resident.set_up(guard, kiosk, push, "bob")

        # The door button: both residents' phones get the encrypted ring.
        await kiosk.cli("press", "call")
        rings = {m.user: m for m in [await push.wait_for(is_ring(u)) for u in ("alice", "bob")]}
        for user, message in rings.items():
            payload = message.payload
            assert payload["call_cid"] == cid, payload
            assert payload["caller"] == {"id": "entrance", "name": "Front door"}, payload
            assert payload["custom"]["location"] == "main entrance", payload
            assert message.urgency == "high" and message.ttl and message.ttl > 0, message
            assert message.topic and len(message.topic) <= 32, message
            resident = alice if user == "alice" else bob
            await resident.channel.deliver(message.text)
        for resident in (alice, bob):
            [shown] = await wait_notifications(resident.worker, lambda n: len(n) == 1, cid)
            assert shown["title"] == "Front door is calling", shown
            assert shown["actions"] == ["accept", "decline"], shown

        # Alice accepts on her notification: the console opens straight into the call.
        opened = await click_notification(alice.worker, cid, "accept")
        assert opened == [f"{kiosk.base_url}/#accept={quote(cid, safe='')}"], opened
        page = await guard.new_page(alice.context)
        await page.goto(opened[0])
        await expect(page.locator("#incall")).to_have_attribute(
            "data-state", "connected", timeout=30000
        )
        await kiosk.wait_status("in_call", lambda s: s["call_state"] == "in_call")

        # Bob's phone: the ring stopped (someone answered) and his notification closes.
        stop = await push.wait_for(is_stop("bob", "accepted"))
        assert stop.topic == rings["bob"].topic
        await bob.channel.deliver(stop.text)
        await wait_notifications(bob.worker, lambda n: n == [], cid)

        await page.locator("#btn-hangup").click()
        await kiosk.wait_status("idle", lambda s: s["call_state"] == "idle")
        await page.close()

        # The next ring: both decline on their notifications, without opening a window; the
        # server ends the ring and the kiosk goes back to idle.
        before = len(push.received)
        await kiosk.cli("press", "call")
        for resident in (alice, bob):
            ring = await push.wait_for(
                lambda m, u=resident.user: push.received.index(m) >= before and is_ring(u)(m)
            )
            await resident.channel.deliver(ring.text)
            await wait_notifications(resident.worker, lambda n: len(n) == 1, cid)
            already = await resident.worker.evaluate("self.opened || []")
            assert await click_notification(resident.worker, cid, "decline") == already
        await kiosk.wait_status("idle after both declined", lambda s: s["call_state"] == "idle")
        state = await kiosk_get(kiosk, "/api/v2/video/call/default/door-entrance")
        assert set(state["call"]["session"]["rejected_by"]) == {"alice", "bob"}, state
        for resident in (alice, bob):
            consoles = [p for p in resident.context.pages if urlsplit(p.url).path == "/"]
            assert consoles == [], [p.url for p in resident.context.pages]
