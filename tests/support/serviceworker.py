"""The console's service worker under test: pushes through the DevTools protocol, its
notifications, and its notification clicks.

A test cannot click a system notification, so :func:`click_notification` runs the worker's
``notificationclick`` handler with the real notification from ``registration.getNotifications()``
and the action a person would pick; ``clients.openWindow`` (which a browser allows only inside a
real click) is recorded instead, and the test opens the address the worker asked for.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from playwright.async_api import BrowserContext, Page, Worker

from tests.support import poll
from tests.support.browser import PageGuard


async def service_worker(context: BrowserContext) -> Worker:
    if not context.service_workers:
        await context.wait_for_event("serviceworker")
    return context.service_workers[0]


class PushChannel:
    """Delivers push messages to a context's service worker through the DevTools protocol, from
    a page of the same origin that is not a console (so the console counts as closed)."""

    def __init__(self, page: Page, origin: str) -> None:
        self.page = page
        self.origin = origin
        self.registration_id = ""

    @classmethod
    async def open(cls, guard: PageGuard, context: BrowserContext, origin: str) -> PushChannel:
        page = await guard.new_page(context)
        await page.goto(f"{origin}/manifest.webmanifest")
        channel = cls(page, origin)
        cdp = await context.new_cdp_session(page)
        registrations: list[dict[str, Any]] = []
        cdp.on(
            "ServiceWorker.workerRegistrationUpdated",
            lambda event: registrations.extend(event["registrations"]),
        )
        await cdp.send("ServiceWorker.enable")

        def registered() -> bool:
            live = [
                r for r in registrations if not r["isDeleted"] and r["scopeURL"] == f"{origin}/"
            ]
            if live:
                channel.registration_id = live[-1]["registrationId"]
            return bool(live)

        await poll.until(registered, 5.0, what="the worker's registration")
        channel.cdp = cdp
        return channel

    cdp: Any

    async def deliver(self, payload: dict[str, Any] | str) -> None:
        """One push message: a payload, or the text a push service decrypted."""
        data = payload if isinstance(payload, str) else json.dumps(payload)
        await self.cdp.send(
            "ServiceWorker.deliverPushMessage",
            {"origin": self.origin, "registrationId": self.registration_id, "data": data},
        )


NOTIFICATIONS_JS = """
async (tag) => (await self.registration.getNotifications(tag ? {tag} : {})).map((n) => ({
  title: n.title, body: n.body, tag: n.tag, requireInteraction: n.requireInteraction,
  vibrate: Array.from(n.vibrate || []), actions: (n.actions || []).map((a) => a.action),
  data: n.data,
}))
"""

# Record clients.openWindow (allowed only inside a real notification click) and run the worker's
# notificationclick handler with the real notification and an action.
CLICK_JS = """
async ([tag, action]) => {
  self.opened = self.opened || [];
  Object.defineProperty(self.clients, 'openWindow', {
    configurable: true,
    value: async (url) => { self.opened.push(url); return null; },
  });
  const [notification] = await self.registration.getNotifications({tag});
  if (!notification) throw new Error(`no notification tagged ${tag}`);
  await self.applianceWorker.onNotificationClick({notification, action});
  return self.opened;
}
"""


async def notifications(worker: Worker, tag: str = "") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await worker.evaluate(NOTIFICATIONS_JS, tag)
    return found


async def wait_notifications(
    worker: Worker, check: Callable[[list[dict[str, Any]]], bool], tag: str
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def matched() -> bool:
        found[:] = await notifications(worker, tag)
        return check(found)

    await poll.until(matched, 15.0, what=f"the notifications tagged {tag!r}", every=0.1)
    return found


STORE_CREDENTIALS_JS = """
async ([apiKey, token]) => {
  const db = await new Promise((resolve, reject) => {
    const request = indexedDB.open('appliance', 1);
    request.onupgradeneeded = () => request.result.createObjectStore('kv');
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  await new Promise((resolve, reject) => {
    const tx = db.transaction('kv', 'readwrite');
    tx.objectStore('kv').put({apiKey, token}, 'signin');
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  });
  db.close();
}
"""


HIDDEN_JS = """
(() => {
  // Headless tabs are always visible: a test can say that this one is not.
  let hidden = false;
  Object.defineProperty(document, 'visibilityState', {get: () => (hidden ? 'hidden' : 'visible')});
  Object.defineProperty(document, 'hidden', {get: () => hidden});
  window.setTestHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event('visibilitychange'));
  };
})();
"""


async def click_notification(worker: Worker, tag: str, action: str) -> list[str]:
    """A person clicks ``action`` ("" for the notification itself) on the notification tagged
    ``tag``; returns every address the worker asked to open so far."""
    opened: list[str] = await worker.evaluate(CLICK_JS, [tag, action])
    return opened
