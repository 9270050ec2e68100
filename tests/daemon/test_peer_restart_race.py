"""A restart the link watch decided must not tear down a connection that progressed meanwhile.

The watch samples the peer (``connecting``, offer not answered yet), decides to restart and queues
the restart behind whatever the peer's task is handling. If that is the answer to the current offer,
the restart used to run right after it: the offerer closed the connection it had just completed,
whose answerer (the DTLS client, which completes first) saw it close a moment after connecting —
what the field unit's link-drop test logged once (``tests/daemon/test_e2e_field.py``). Two real
``Peer`` objects on loopback, the signals carried by hand so the order is the one of the race.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from appliance.media.peer import Peer
from tests.support.poll import until

pytestmark = pytest.mark.timeout(60)


class HandWire:
    """Signals wait here until the test delivers them (or ``flow`` lets them through)."""

    def __init__(self) -> None:
        self.peers: dict[str, Peer] = {}
        self.sent: dict[str, list[dict[str, Any]]] = {}
        self.held: list[tuple[str, dict[str, Any]]] = []
        self.flowing = False

    def sender(self, frm: str, to: str) -> Any:
        async def send(signal: dict[str, Any]) -> None:
            self.sent.setdefault(frm, []).append(dict(signal))
            if self.flowing:
                self.peers[to].deliver(signal)
            else:
                self.held.append((to, signal))

        return send

    def flow(self) -> None:
        self.flowing = True
        held, self.held = self.held, []
        for to, signal in held:
            self.peers[to].deliver(signal)

    def kinds(self, frm: str) -> list[str]:
        return [s["kind"] for s in self.sent.get(frm, [])]


@contextlib.asynccontextmanager
async def pair() -> AsyncIterator[tuple[HandWire, Peer, Peer]]:
    """Offerer ``a`` and answerer ``b``, started, their first offer held on the wire. The link
    watches stay out of it: the restarts of these tests are the ones they call."""
    wire = HandWire()
    timeouts = {"stall_timeout": 120.0, "restart_timeout": 60.0}
    offerer = Peer(
        "b", local="a", offerer=True, send=wire.sender("a", "b"), ice_servers=[], **timeouts
    )
    answerer = Peer(
        "a", local="b", offerer=False, send=wire.sender("b", "a"), ice_servers=[], **timeouts
    )
    wire.peers = {"a": offerer, "b": answerer}
    try:
        await answerer.start()
        await offerer.start()
        yield wire, offerer, answerer
    finally:
        await offerer.close()
        await answerer.close()


async def both_connected(offerer: Peer, answerer: Peer) -> None:
    await until(
        lambda: offerer.state == "connected" and answerer.state == "connected",
        30.0,
        what="both connected",
    )


async def test_a_restart_queued_behind_the_answer_does_not_replace_the_answered_connection() -> (
    None
):
    async with pair() as (wire, offerer, answerer):
        assert [s["kind"] for _, s in wire.held] == ["offer"]
        _, offer = wire.held.pop()
        answerer.deliver(offer)
        await until(lambda: wire.kinds("b") == ["answer"], 20.0, what="the answer")
        _, answer = wire.held.pop()

        # The answer reaches the offerer's inbox; the restart decided on what the watch saw just
        # before (connecting, not answered) is queued behind it.
        offerer.deliver(answer)
        await offerer.restart("connecting")

        wire.flow()
        await both_connected(offerer, answerer)
        assert wire.kinds("a") == ["offer"], "the answered connection was restarted"
        assert (offerer.connections, answerer.connections) == (1, 1)
        assert (offerer.generation, answerer.generation) == (0, 0)
        assert offerer.restarts == 0


async def test_a_restart_still_runs_when_nothing_progressed() -> None:
    """The same restart on an offer that is still unanswered replaces the connection."""
    async with pair() as (wire, offerer, answerer):
        await offerer.restart("connecting")  # the first offer was lost: no answer came
        assert wire.kinds("a") == ["offer", "restart"]
        assert (offerer.connections, offerer.generation, offerer.restarts) == (2, 1, 1)
        wire.held = [h for h in wire.held if h[1]["kind"] == "restart"]  # the lost one stays lost
        wire.flow()
        await both_connected(offerer, answerer)
        assert answerer.generation == 1
