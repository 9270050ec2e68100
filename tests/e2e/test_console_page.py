"""The console page itself (issue #11): missed calls per ring, an unreachable server said as
such, the link state during a call, and the tab title while a ring waits in a hidden tab.

Same server, users and device stand-ins as ``test_console.py``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from playwright.async_api import WebSocketRoute, expect

from tests.e2e.test_console import (
    DOOR,
    alice_calls_the_door,
    guard,
    ring_card,
    ring_from,
    short_ring,
    sign_in,
    srv,
)
from tests.e2e.test_console_a11y import axe_violations
from tests.support.browser import PageGuard, poll_js
from tests.support.server import ServerHandle

pytestmark = pytest.mark.e2e
expect.set_options(timeout=15_000)

__all__ = ["guard", "srv"]  # the fixtures, imported for pytest


# --- missed calls ---------------------------------------------------------------------------------


async def test_each_missed_ring_is_its_own_entry_with_a_badge_until_seen(
    srv: ServerHandle, guard: PageGuard
) -> None:
    await short_ring(srv)
    alice = await sign_in(guard, srv, "alice")
    badge = alice.locator("#missed-badge")
    entries = alice.locator("#missed-list .missed-call")
    await expect(badge).to_be_hidden()
    for n in (1, 2):
        await ring_from(srv, "door-1", DOOR)
        await expect(ring_card(alice)).to_be_visible()
        # incoming_call_timeout_ms is 5 s on this call: the server stops the ring.
        await expect(ring_card(alice)).to_have_count(0)
        await expect(entries).to_have_count(n)
        await expect(badge).to_have_text(str(n))
    # Each entry: who rang, when, and the call's custom data.
    for i in range(2):
        await expect(entries.nth(i).locator(".name")).to_have_text("Front door")
        await expect(entries.nth(i).locator(".status")).to_contain_text("Main entrance")
    keys = await entries.evaluate_all("(nodes) => nodes.map((n) => n.dataset.key)")
    assert len(set(keys)) == 2, keys

    # Opening the list is seeing it: the badge goes, and stays gone after a reload.
    await alice.locator("#missed summary").click()
    await expect(badge).to_be_hidden()
    await alice.reload()
    await expect(alice.locator("#link-state")).to_have_text("online")
    await expect(entries).to_have_count(2)
    await expect(badge).to_be_hidden()

    # A third missed ring badges again, with the new one only.
    await ring_from(srv, "door-1", DOOR)
    await expect(ring_card(alice)).to_be_visible()
    await expect(ring_card(alice)).to_have_count(0)
    await expect(entries).to_have_count(3)
    await expect(badge).to_have_text("1")


async def test_a_ring_missed_while_no_tab_was_open_is_listed_from_the_server(
    srv: ServerHandle, guard: PageGuard
) -> None:
    await short_ring(srv)
    bob = await sign_in(guard, srv, "bob")
    await ring_from(srv, "door-1", DOOR)
    await expect(ring_card(bob)).to_be_visible()
    await expect(ring_card(bob)).to_have_count(0)
    await expect(bob.locator('.recent[data-cid="default:door-1"]')).to_have_attribute(
        "data-outcome", "missed"
    )
    # Alice had no tab open: her first look lists the ring the server says she missed.
    alice = await sign_in(guard, srv, "alice")
    await expect(alice.locator("#missed-list .missed-call")).to_have_count(1)
    await expect(alice.locator("#missed-badge")).to_have_text("1")


# --- an unreachable server ----------------------------------------------------------------------


async def test_an_unreachable_server_says_so_and_retries_instead_of_no_devices(
    srv: ServerHandle, guard: PageGuard
) -> None:
    guard.allow(srv.base_url)
    page = await guard.new_page(bypass_csp=True)  # axe-core goes in too
    blocked = {"ws": True, "list": True}
    attempts = {"ws": 0, "list": 0}

    async def socket(ws: WebSocketRoute) -> None:
        attempts["ws"] += 1
        if blocked["ws"]:
            await ws.close(code=1011, reason="unreachable (test)")
        else:
            ws.connect_to_server()

    async def calls(route):  # type: ignore[no-untyped-def]
        attempts["list"] += 1
        if blocked["list"]:
            await route.abort("connectionrefused")
        else:
            await route.continue_()

    await page.route_web_socket("**/api/v2/connect**", socket)
    await page.route(lambda url: urlsplit(url).path == "/api/v2/video/calls", calls)
    await page.goto(f"{srv.base_url}/?api_key={srv.api_key}&token={srv.user_token('alice')}")
    note = page.locator("#devices-unreachable")
    await expect(note).to_be_visible()
    await expect(note).to_contain_text("Can't reach the server — retrying")
    await expect(page.locator("#devices-empty")).to_be_hidden()
    await expect(page.locator("#link-state")).to_have_text("offline")
    # The retry is under way: the attempt counter moves on.
    await expect(note).to_contain_text(re.compile(r"attempt [2-9]"))
    assert attempts["ws"] >= 2, attempts
    assert await axe_violations(page) == []

    # The socket comes through but the list still fails: still "can't reach", not "no devices".
    blocked["ws"] = False
    await expect(page.locator("#link-state")).to_have_text("online")
    await poll_js(page, "1", lambda _: attempts["list"] >= 2)
    await expect(note).to_be_visible()
    await expect(page.locator("#devices-empty")).to_be_hidden()

    blocked["list"] = False
    await expect(page.locator('.device[data-user-id="door-1"]')).to_be_visible()
    await expect(note).to_be_hidden()


# --- the link state during a call ---------------------------------------------------------------

ON_TOP_JS = """(selector) => {
  const node = document.querySelector(selector);
  const box = node.getBoundingClientRect();
  if (!box.width || !box.height) return false;
  const hit = document.elementFromPoint(box.x + box.width / 2, box.y + box.height / 2);
  return hit === node || node.contains(hit);
}"""


async def test_the_link_state_stays_visible_during_a_call(
    srv: ServerHandle, guard: PageGuard
) -> None:
    _, alice = await alice_calls_the_door(guard, srv)
    link = alice.locator("#call-link")
    await expect(link).to_have_text("online")
    assert await alice.evaluate(ON_TOP_JS, "#call-link")
    await srv.stop()
    await expect(link).to_have_text("reconnecting…")
    await expect(link).to_have_attribute("data-state", "reconnecting")
    assert await alice.evaluate(ON_TOP_JS, "#call-link")
    await srv.start()
    await expect(link).to_have_text("online", timeout=20_000)


# --- the tab title while a ring waits in a hidden tab -------------------------------------------

# Headless Chromium keeps every tab "visible": the test decides what document.visibilityState
# says (before the page's scripts run) and fires visibilitychange as the browser would.
VISIBILITY_JS = """
(() => {
  let state = 'visible';
  Object.defineProperty(Document.prototype, 'visibilityState', {configurable: true, get: () => state});
  Object.defineProperty(Document.prototype, 'hidden', {configurable: true, get: () => state === 'hidden'});
  window.__setVisibility = (next) => {
    state = next;
    document.dispatchEvent(new Event('visibilitychange'));
  };
  window.__titles = [];
  const watch = () => {
    const title = document.querySelector('title');
    new MutationObserver(() => window.__titles.push(document.title)).observe(
      title, {childList: true, characterData: true, subtree: true});
  };
  document.addEventListener('DOMContentLoaded', watch);
})();
"""
CALLING = "🔔 Front door is calling"
LONG_RING = {"ring": {"incoming_call_timeout_ms": 60000, "auto_cancel_timeout_ms": 60000}}


async def test_the_title_blinks_while_a_ring_waits_in_a_hidden_tab(
    srv: ServerHandle, guard: PageGuard
) -> None:
    guard.allow(srv.base_url)
    context = await guard.new_context()
    await context.add_init_script(VISIBILITY_JS)
    alice = await sign_in(guard, srv, "alice", context=context)
    plain = await alice.title()
    async with srv.client() as admin:  # long rings: each one here ends when the test says
        r = await admin.patch(DOOR, json={"settings_override": LONG_RING})
        assert r.status_code == 200, r.text

    # A ring in a visible tab leaves the title alone.
    await ring_from(srv, "door-1", DOOR)
    await expect(ring_card(alice)).to_be_visible()
    await ring_card(alice).locator("button.decline").click()
    await expect(ring_card(alice)).to_have_count(0)
    assert await alice.evaluate("window.__titles") == []

    # Hidden: it blinks (the ring's text and the plain title, in turn) until the tab is shown.
    await alice.evaluate("window.__setVisibility('hidden')")
    await ring_from(srv, "door-1", DOOR)
    await expect(ring_card(alice)).to_be_visible()
    titles = await poll_js(
        alice, "window.__titles", lambda t: t.count(CALLING) >= 2 and plain in t, seconds=10
    )
    assert set(titles) == {CALLING, plain}, titles
    await alice.evaluate("window.__setVisibility('visible')")
    await expect(alice).to_have_title(plain)
    count = len(await alice.evaluate("window.__titles"))
    # Hidden again, it blinks again, and the ring's end (the door gives up) stops it.
    await alice.evaluate("window.__setVisibility('hidden')")
    await poll_js(alice, "window.__titles", lambda t: CALLING in t[count:])
    async with srv.client("door-1") as door:
        r = await door.post(f"{DOOR}/reject", json={"reason": "cancel"})
        assert r.status_code == 200, r.text
    await expect(ring_card(alice)).to_have_count(0)
    await expect(alice).to_have_title(plain)
    settled = len(await alice.evaluate("window.__titles"))
    # Nothing to await for "stays still": watch two blink periods.
    await alice.evaluate("new Promise((r) => setTimeout(r, 2500))")
    assert len(await alice.evaluate("window.__titles")) == settled
