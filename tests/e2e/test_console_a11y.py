"""Accessibility of the console (issue #11 item 7): axe-core finds nothing on the sign-in, home,
ring and in-call views at desktop and phone size in light and dark mode; no single-key
shortcut (Alt + key, or off); Unlock is confirmed; a ring does not take the keyboard (a stray
Enter answers nothing); what lies under the ring card and the call view is inert.

axe-core comes from the npm registry (tests/js, installed by the Makefile's ``npm ci``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.e2e import test_console as console
from tests.support.browser import DESKTOP, PHONE, PageGuard, poll_js, wait_for_js
from tests.support.server import ServerHandle

pytestmark = pytest.mark.e2e
expect.set_options(timeout=15_000)

# The server, users and device stand-ins of test_console.py.
srv = console.srv
guard = console.guard
DOOR = console.DOOR
alice_calls_the_door = console.alice_calls_the_door
device_page = console.device_page
ring_card = console.ring_card
ring_from = console.ring_from
sign_in = console.sign_in

AXE = Path(__file__).resolve().parents[1] / "js" / "node_modules" / "axe-core" / "axe.min.js"
LONG_RING = {"ring": {"incoming_call_timeout_ms": 60000, "auto_cancel_timeout_ms": 60000}}

MISSED_ONE_JS = """localStorage.setItem('appliance.missed.alice', JSON.stringify([{
  key: 'default:door-1/s-1', cid: 'default:door-1', at: Date.now() - 60000,
  caller: 'Front door', custom: {location: 'Main entrance'}}]))"""

# Tab through the page; say where focus went each time (inside which part of the page).
TAB_PLACES_JS = """() => {
  const node = document.activeElement;
  if (!node || node === document.body) return 'body';
  if (node.closest('#rings')) return 'rings';
  if (node.closest('#incall')) return 'incall';
  return 'background:' + (node.id || node.tagName);
}"""


async def long_rings(srv: ServerHandle) -> None:
    async with srv.client() as admin:
        r = await admin.patch(DOOR, json={"settings_override": LONG_RING})
        assert r.status_code == 200, r.text


async def tab_places(page: Page, presses: int = 8) -> set[str]:
    places = set()
    for _ in range(presses):
        await page.keyboard.press("Tab")
        places.add(await page.evaluate(TAB_PLACES_JS))
    return places


# --- a ring does not take the keyboard, and the background is inert -----------------------------


async def test_a_stray_enter_does_not_answer_and_the_background_is_inert_under_a_ring(
    srv: ServerHandle, guard: PageGuard
) -> None:
    await long_rings(srv)
    alice = await sign_in(guard, srv, "alice")
    await alice.locator("#signout").focus()  # typing somewhere when the ring comes
    await ring_from(srv, "door-1", DOOR)
    card = ring_card(alice)
    await expect(card).to_be_visible()
    assert await alice.evaluate("document.activeElement.classList.contains('accept')") is False
    await alice.keyboard.press("Enter")
    await alice.keyboard.press("Space")
    # Then the user declines on purpose: had a key answered, the server saw the accept first.
    await card.locator("button.decline").click()
    await expect(card).to_have_count(0)
    await expect(alice.locator("#incall")).to_be_hidden()
    # Focus is back where she was.
    assert await alice.evaluate("document.activeElement.id") == "signout"
    async with srv.client() as admin:
        session = (await admin.get(DOOR)).json()["call"]["session"]
    assert "alice" not in (session.get("accepted_by") or {}), session
    assert "alice" in (session.get("rejected_by") or {}), session
    await expect(alice.locator("#signin")).to_be_hidden()  # nor did Enter sign her out

    # Under the ring card: header and lists are inert, Tab stays on the card.
    await ring_from(srv, "door-1", DOOR)
    await expect(card).to_be_visible()
    for selector in ("header.bar", "main"):
        assert await alice.evaluate(f"document.querySelector('{selector}').inert"), selector
    assert await tab_places(alice) <= {"rings", "body"}
    await card.locator("button.decline").click()
    await expect(card).to_have_count(0)
    assert not await alice.evaluate("document.querySelector('main').inert")
    assert any(p.startswith("background:") for p in await tab_places(alice, 4))


async def test_the_background_is_inert_under_the_call_view(
    srv: ServerHandle, guard: PageGuard
) -> None:
    _, alice = await alice_calls_the_door(guard, srv)
    for selector in ("header.bar", "main"):
        assert await alice.evaluate(f"document.querySelector('{selector}').inert"), selector
    assert not await alice.evaluate("document.querySelector('#incall').inert")
    assert await tab_places(alice) <= {"incall", "body"}
    await alice.locator("#btn-hangup").click()
    await expect(alice.locator("#incall")).to_be_hidden()
    assert not await alice.evaluate("document.querySelector('main').inert")


# --- shortcuts and Unlock -----------------------------------------------------------------------


async def test_shortcuts_need_alt_can_be_turned_off_and_unlock_is_confirmed(
    srv: ServerHandle, guard: PageGuard
) -> None:
    door, alice = await alice_calls_the_door(guard, srv)
    mic = alice.locator("#btn-mic")
    unlock = alice.locator("#btn-unlock")
    await expect(unlock).to_be_visible()
    # Single keys do nothing.
    for key in ("m", "u", "h", "v"):
        await alice.keyboard.press(key)
    await expect(mic).to_have_attribute("aria-pressed", "false")
    await expect(alice.locator("#incall")).to_be_visible()
    assert await door.evaluate("window.device.unlocks") == 0
    # Alt + key works; Unlock asks first, and only the confirmation unlocks.
    await alice.keyboard.press("Alt+KeyM")
    await expect(mic).to_have_attribute("aria-pressed", "true")
    await alice.keyboard.press("Alt+KeyU")
    await expect(unlock).to_have_text("Confirm unlock")
    assert await door.evaluate("window.device.unlocks") == 0
    await alice.keyboard.press("Alt+KeyU")
    await expect(alice.locator("#call-message")).to_have_text("Door unlocked")
    assert await door.evaluate("window.device.unlocks") == 1
    # An unconfirmed Unlock lapses by itself.
    await unlock.click()
    await expect(unlock).to_have_text("Confirm unlock")
    await expect(unlock).to_have_text("Unlock", timeout=10_000)
    assert await door.evaluate("window.device.unlocks") == 1
    await alice.locator("#btn-hangup").click()
    await expect(alice.locator("#incall")).to_be_hidden()

    # Turned off (and remembered): Alt + key does nothing either (Eve and her gate this time).
    await device_page(guard, srv, "gate-9", answer=True)
    eve = await sign_in(guard, srv, "eve")
    await eve.locator("#shortcuts-on").uncheck()
    await eve.reload()
    await expect(eve.locator("#link-state")).to_have_text("online")
    await expect(eve.locator("#shortcuts-on")).not_to_be_checked()
    await eve.locator('.device[data-user-id="gate-9"] button.call-device').click()
    await expect(eve.locator("#incall")).to_have_attribute("data-state", "connected")
    await eve.keyboard.press("Alt+KeyM")
    await eve.keyboard.press("Alt+KeyH")
    await expect(eve.locator("#btn-mic")).to_have_attribute("aria-pressed", "false")
    await expect(eve.locator("#incall")).to_be_visible()
    await eve.locator("#btn-hangup").click()
    await expect(eve.locator("#incall")).to_be_hidden()


# --- axe-core -----------------------------------------------------------------------------------


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    if not await page.evaluate("Boolean(window.axe)"):
        await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "axe.run(document, {resultTypes: ['violations']}).then((r) => r.violations.map("
        "(v) => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map((n) => [n.target.join(' '), n.failureSummary])})))"
    )
    return list(result)


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_axe_finds_no_violations_on_any_view(
    srv: ServerHandle, guard: PageGuard, scheme: str
) -> None:
    assert AXE.exists(), f"{AXE} is missing: run `make tests/js/node_modules/.installed`"
    await long_rings(srv)
    found: dict[str, list[dict[str, Any]]] = {}

    async def check(page: Page, view: str) -> None:
        for size, name in ((DESKTOP, "desktop"), (PHONE, "phone")):
            await page.set_viewport_size(size)  # type: ignore[arg-type]
            violations = await axe_violations(page)
            if violations:
                found[f"{view}/{name}"] = violations

    # The page's CSP allows scripts of its own origin only: axe comes in with CSP bypassed.
    options = {"color_scheme": scheme, "bypass_csp": True}
    guard.allow(srv.base_url)
    signin = await guard.new_page(**options)
    await signin.goto(f"{srv.base_url}/")
    await expect(signin.locator("#signin")).to_be_visible()
    await check(signin, "sign-in")

    door = await device_page(guard, srv, "door-1", answer=False)
    alice = await sign_in(guard, srv, "alice", **options)
    await expect(alice.locator('.device[data-user-id="door-1"]')).to_be_visible()
    # With a missed ring badged, then with the list open.
    await alice.evaluate(MISSED_ONE_JS)
    await alice.reload()
    await expect(alice.locator("#missed-badge")).to_have_text("1")
    await check(alice, "home")
    await alice.locator("#missed summary").click()
    await expect(alice.locator("#missed-list .missed-call")).to_have_count(1)
    await check(alice, "home-missed-open")

    await door.evaluate("window.device.call.join({})")
    await ring_from(srv, "door-1", DOOR)
    await expect(ring_card(alice)).to_be_visible()
    await check(alice, "ring")

    await ring_card(alice).locator("button.accept").click()
    await expect(alice.locator("#incall")).to_have_attribute("data-state", "connected")
    await wait_for_js(alice, "document.querySelector('#remote-video').videoWidth > 0")
    await poll_js(alice, "document.querySelector('#call-quality').textContent", bool)
    await check(alice, "in-call")
    await alice.locator("#btn-hangup").click()
    await expect(alice.locator("#incall")).to_be_hidden()
    assert not found, json.dumps(found, indent=1)
