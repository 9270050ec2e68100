"""A device already in a call, and a third person in it (issue #11 item 6).

Alice talks with the door (the call.js stand-in of test_console.py); Bob's console shows the door
"Busy — in a call with Alice"; his Call asks before joining; joined, everyone has a named tile of
their own, the door's picture stays large for Alice, and she is told "Bob joined". Media is a
mesh (one RTCPeerConnection per pair), so the third participant sends and receives with both.
On a call type whose members lack ``join-ongoing-call`` the server refuses and Bob reads why.
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from tests.e2e import test_console as console
from tests.e2e.test_console_a11y import axe_violations
from tests.support.browser import PageGuard, wait_for_js
from tests.support.server import ServerHandle

pytestmark = pytest.mark.e2e
expect.set_options(timeout=15_000)

srv = console.srv
guard = console.guard
DOOR = console.DOOR

# The user shown large, and the named tiles, in a console's call view.
VIEW_JS = """() => {
  const view = window.applianceConsole.view;
  const call = window.applianceConsole.call;
  const main = call.participants.get(view.mainSession);
  return {
    main: main ? (main.user?.id || main.user_id) : null,
    mainName: document.querySelector('#remote-name').textContent,
    tiles: [...document.querySelectorAll('#tiles .tile')].map((t) => [
      t.dataset.userId, t.querySelector('.tile-name').textContent,
      t.querySelector('video').videoWidth > 0]),
  };
}"""


async def _participants(srv: ServerHandle) -> list[str]:
    async with srv.client() as admin:
        session = (await admin.get(DOOR)).json()["call"]["session"] or {}
    return sorted(p["user"]["id"] for p in session.get("participants", []))


async def _bob_sees_the_door_busy(guard: PageGuard, srv: ServerHandle) -> tuple[Page, Page, Page]:
    door, alice = await console.alice_calls_the_door(guard, srv)
    bob = await console.sign_in(guard, srv, "bob", bypass_csp=True)  # axe goes in too
    card = bob.locator('.device[data-user-id="door-1"]')
    await expect(card).to_have_attribute("data-busy", "true")
    await expect(card.locator(".busy")).to_have_text("Busy — in a call with Alice")
    return door, alice, bob


async def test_a_busy_device_says_with_whom_and_call_asks_before_joining(
    srv: ServerHandle, guard: PageGuard
) -> None:
    door, alice, bob = await _bob_sees_the_door_busy(guard, srv)
    assert await axe_violations(bob) == []
    await bob.locator('.device[data-user-id="door-1"] button.call-device').click()
    ask = console.ring_card(bob)
    await expect(ask.locator(".ring-state")).to_have_text("Join the call with Alice?")
    assert await axe_violations(bob) == []
    # Asked, not joined; Cancel leaves the call alone.
    assert await _participants(srv) == ["alice", "door-1"]
    await ask.locator("button.decline").click()
    await expect(ask).to_have_count(0)
    await expect(bob.locator("#incall")).to_be_hidden()
    assert await _participants(srv) == ["alice", "door-1"]

    # Join: three participants, each with everyone's picture; the door's stays large.
    await bob.locator('.device[data-user-id="door-1"] button.call-device').click()
    await ask.locator("button.accept").click()
    await expect(bob.locator("#incall")).to_be_visible()
    assert await _participants(srv) == ["alice", "bob", "door-1"]
    await expect(alice.locator("#call-message")).to_have_text("Bob joined")
    for page, other, name in ((alice, "bob", "Bob"), (bob, "alice", "Alice")):
        # Both pictures arrive (in either order): the door's large, the other's on a tile.
        view = await wait_for_js(
            page,
            f"(() => {{ const v = ({VIEW_JS})(); return v.main && v.tiles.length && v.tiles[0][2] && v; }})()",
        )
        assert view["main"] == "door-1", view
        assert view["mainName"] == "Front door", view
        assert view["tiles"] == [[other, name, True]], view
    await wait_for_js(bob, "document.querySelector('#remote-video').videoWidth > 0")
    assert await axe_violations(bob) == []  # the call view with a tile
    # The door has a connection with each of them.
    await wait_for_js(
        door,
        "[...window.device.call.peers.values()].filter((p) => p.state === 'connected').length === 2",
    )

    # Bob leaves: Alice is told, his tile goes, the door's picture stays.
    await bob.locator("#btn-hangup").click()
    await expect(alice.locator("#call-message")).to_have_text("Bob left")
    await expect(alice.locator("#tiles .tile")).to_have_count(0)
    await expect(alice.locator("#incall")).to_have_attribute("data-state", "connected")
    assert (await alice.evaluate(VIEW_JS))["main"] == "door-1"
    await alice.locator("#btn-hangup").click()
    await expect(alice.locator("#incall")).to_be_hidden()


async def test_the_server_refuses_a_third_member_where_the_call_type_says_so(
    srv: ServerHandle, guard: PageGuard
) -> None:
    async with srv.client() as admin:  # call_members of default: no join-ongoing-call here
        caps = (await admin.get("/api/v2/video/calltypes/default")).json()["grants"]
        member = [c for c in caps["call_member"] if c != "join-ongoing-call"]
        r = await admin.put(
            "/api/v2/video/calltypes/default", json={"grants": {"call_member": member}}
        )
        assert r.status_code == 200, r.text
    _, alice, bob = await _bob_sees_the_door_busy(guard, srv)
    await bob.locator('.device[data-user-id="door-1"] button.call-device').click()
    ask = console.ring_card(bob)
    await ask.locator("button.accept").click()
    await expect(ask.locator(".ring-state")).to_contain_text("join-ongoing-call")
    await expect(bob.locator("#incall")).to_be_hidden()
    assert await _participants(srv) == ["alice", "door-1"]
    await expect(ask).to_have_count(0, timeout=20_000)
    await expect(alice.locator("#tiles .tile")).to_have_count(0)
    await alice.locator("#btn-hangup").click()
    await expect(alice.locator("#incall")).to_be_hidden()


async def test_join_after_the_conversation_ended_joins_nothing(
    srv: ServerHandle, guard: PageGuard
) -> None:
    _, alice, bob = await _bob_sees_the_door_busy(guard, srv)
    await bob.locator('.device[data-user-id="door-1"] button.call-device').click()
    ask = console.ring_card(bob)
    await expect(ask.locator(".ring-state")).to_have_text("Join the call with Alice?")
    await alice.locator("#btn-hangup").click()  # while Bob is asked
    await expect(alice.locator("#incall")).to_be_hidden()
    await ask.locator("button.accept").click()
    await expect(ask.locator(".ring-state")).to_have_text("That call has ended.")
    await expect(ask).to_have_count(0)
    await expect(bob.locator("#incall")).to_be_hidden()
    assert "bob" not in await _participants(srv)
