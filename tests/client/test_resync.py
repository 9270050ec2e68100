"""Ring ledger and resync logic with the server's answers given as data (no network)."""

from typing import Any

from appliance.client.events import Event
from appliance.client.models import CallInfo, CallResponse
from appliance.client.resync import Resync, RingLedger
from appliance.errors import NotFound

ME = "bedside"


def call(cid: str = "default:c1", session: str | None = "s1", **fields: Any) -> CallInfo:
    call_type, call_id = cid.split(":")
    body: dict[str, Any] = {"type": call_type, "id": call_id, "cid": cid}
    if session is not None:
        body["current_session_id"] = session
        body["session"] = {"id": session, **fields}
    return CallInfo.model_validate(body)


def ring(cid: str = "default:c1", session: str = "s1", **fields: Any) -> Event:
    return Event(type="call.ring", call_cid=cid, call=call(cid, session, **fields))


def test_ledger_drops_a_replayed_ring_but_not_a_new_session() -> None:
    ledger = RingLedger(ME)
    assert ledger.admit(ring())
    assert not ledger.admit(ring())
    assert ledger.admit(ring(session="s2"))


def test_ledger_never_redelivers_a_ring_that_ended() -> None:
    ledger = RingLedger(ME)
    assert ledger.admit(ring())
    assert ledger.admit(
        Event.model_validate(
            {"type": "call.accepted", "call_cid": "default:c1", "user": {"id": "nurse"}}
        )
    )
    assert ledger.ringing == {}
    assert not ledger.admit(ring())


def test_someone_elses_reject_does_not_end_my_ring() -> None:
    ledger = RingLedger(ME)
    ledger.admit(ring())
    ledger.admit(
        Event.model_validate(
            {"type": "call.rejected", "call_cid": "default:c1", "user": {"id": "other"}}
        )
    )
    assert "default:c1" in ledger.ringing
    ledger.admit(
        Event.model_validate({"type": "call.missed", "call_cid": "default:c1", "user": {"id": ME}})
    )
    assert ledger.ringing == {}


class Server:
    """The server's truth as the resync reads it."""

    def __init__(self) -> None:
        self.calls: dict[str, CallInfo] = {}
        self.open: list[CallResponse] = []
        self.asked_since: list[int | None] = []

    async def get_call(self, cid: str) -> CallResponse:
        if cid not in self.calls:
            raise NotFound("no such call", cid=cid)
        return CallResponse(call=self.calls[cid])

    async def open_calls(self, missed_since: int | None = None) -> list[CallResponse]:
        self.asked_since.append(missed_since)
        return self.open


def make_resync(
    server: Server, ledger: RingLedger, snapshots: dict[str, CallInfo]
) -> tuple[Resync, list[Event]]:
    emitted: list[Event] = []
    resync = Resync(
        ME,
        ledger,
        snapshots,
        get_call=server.get_call,
        open_calls=server.open_calls,
        admit=ledger.admit,
        emit=emitted.append,
    )
    return resync, emitted


async def test_ring_that_started_while_away_is_emitted_once_even_on_an_unknown_call() -> None:
    server = Server()
    server.open = [CallResponse(call=call("default:new", ringing=[ME], rung_by="door"))]
    ledger = RingLedger(ME)
    resync, emitted = make_resync(server, ledger, {})
    assert await resync.run() == 1
    assert [(e.type, e.cid, e.user.id if e.user else None, e.resynced) for e in emitted] == [
        ("call.ring", "default:new", "door", True)
    ]
    server.calls["default:new"] = server.open[0].call
    assert await resync.run() == 0
    assert len(emitted) == 1
    # The hub's own re-sent ring after the next reconnect is a replay too.
    assert not ledger.admit(ring("default:new", ringing=[ME]))


async def test_no_ring_when_i_am_not_ringing_or_the_session_ended() -> None:
    server = Server()
    server.open = [
        CallResponse(call=call("default:a", ringing=["someone-else"])),
        CallResponse(call=call("default:b", ringing=[ME], ended_at=1)),
        CallResponse(call=call("default:c", session=None)),
    ]
    resync, emitted = make_resync(server, RingLedger(ME), {})
    assert await resync.run() == 0
    assert emitted == []


async def test_ring_answered_elsewhere_while_away_stops_ringing_here() -> None:
    server = Server()
    ledger = RingLedger(ME)
    ledger.admit(ring())
    server.calls["default:c1"] = call(accepted_by={"nurse": 1})
    resync, emitted = make_resync(server, ledger, {})
    await resync.run()
    assert [(e.type, e.user.id if e.user else None) for e in emitted] == [
        ("call.accepted", "nurse")
    ]
    assert ledger.ringing == {}


async def test_ring_missed_while_away() -> None:
    server = Server()
    ledger = RingLedger(ME)
    ledger.admit(ring())
    server.calls["default:c1"] = call(missed_by={ME: 1})
    resync, emitted = make_resync(server, ledger, {})
    await resync.run()
    assert [e.type for e in emitted] == ["call.missed"]


async def test_ring_whose_session_ended_while_away() -> None:
    server = Server()
    ledger = RingLedger(ME)
    ledger.admit(ring())
    server.calls["default:c1"] = call(ended_at=1)
    resync, emitted = make_resync(server, ledger, {})
    await resync.run()
    assert [e.type for e in emitted] == ["call.ended"]
    assert ledger.ringing == {}


async def test_joined_call_participants_and_end_are_diffed() -> None:
    server = Server()
    before = call(
        participants=[{"session_id": "p-me"}, {"session_id": "p-old", "user": {"id": "x"}}]
    )
    server.calls["default:c1"] = call(
        participants=[{"session_id": "p-me"}, {"session_id": "p-new"}]
    )
    snapshots = {"default:c1": before}
    resync, emitted = make_resync(server, RingLedger(ME), snapshots)
    await resync.run()
    assert sorted((e.type, e.participant.session_id) for e in emitted if e.participant) == [
        ("call.session_participant_joined", "p-new"),
        ("call.session_participant_left", "p-old"),
    ]
    assert snapshots["default:c1"] is server.calls["default:c1"]
    emitted.clear()
    server.calls["default:c1"] = call(session="s2")
    await resync.run()
    assert [e.type for e in emitted] == ["call.ended", "call.session_ended"]
    assert emitted[1].session_id == "s1"


async def test_deleted_call() -> None:
    server = Server()
    snapshots = {"default:c1": call()}
    resync, emitted = make_resync(server, RingLedger(ME), snapshots)
    await resync.run()
    assert [e.type for e in emitted] == ["call.deleted"]
    assert snapshots == {}


async def test_rung_call_that_timed_out_while_away_reports_missed_then_one_end() -> None:
    server = Server()
    ledger = RingLedger(ME)
    rung = ring(ringing=[ME])
    assert rung.call is not None
    ledger.admit(rung)
    snapshots = {"default:c1": rung.call}
    server.calls["default:c1"] = call(missed_by={ME: 1}, ended_at=2, end_reason="timeout")
    resync, emitted = make_resync(server, ledger, snapshots)
    await resync.run()
    assert [(e.type, e.reason) for e in emitted] == [
        ("call.missed", None),
        ("call.ended", "timeout"),
        ("call.session_ended", None),
    ]
    assert await resync.run() == 0


def test_ledger_drops_the_same_end_of_a_ring_told_twice() -> None:
    """A reconnect's resync can report a miss the live socket then delivers too."""
    ledger = RingLedger(ME)
    assert ledger.admit(ring())

    def missed(session: str, resynced: bool = False) -> Event:
        return Event(
            type="call.missed",
            call_cid="default:c1",
            call=call(session=session),
            user={"id": ME},  # type: ignore[arg-type]
            resynced=resynced,
        )

    assert ledger.admit(missed("s1", resynced=True))
    assert not ledger.admit(missed("s1"))
    assert ledger.admit(ring(session="s2"))
    assert ledger.admit(missed("s2"))


def end(kind: str, session: str = "s1", **fields: Any) -> Event:
    return Event.model_validate(
        {"type": kind, "call_cid": "default:c1", "call": call(session=session), **fields}
    )


async def test_ring_ended_live_before_the_resync_read_it_still_reports_my_miss() -> None:
    """Seen in a rolling restart: the ring timed out while the device was away; on the new
    socket the call's end (relayed late by a busy replica) arrived before the resync's read, so
    the ring was no longer "ringing" and the resync did not report the miss."""
    server = Server()
    ledger = RingLedger(ME)
    assert ledger.admit(ring(ringing=[ME]))
    assert ledger.admit(Event(type="connection.lost"))  # the socket dropped
    # The new socket: session over, then the call's end, before the resync has read anything.
    assert ledger.admit(end("call.session_ended", session_id="s1"))
    assert ledger.admit(end("call.ended", reason="timeout"))
    assert ledger.ringing == {}
    server.calls["default:c1"] = call(missed_by={ME: 1}, ended_at=2, end_reason="timeout")
    resync, emitted = make_resync(server, ledger, {})
    assert await resync.run() == 1
    assert [(e.type, e.user.id if e.user else None, e.resynced) for e in emitted] == [
        ("call.missed", ME, True)
    ]
    assert ledger.unsettled == {}
    # Read once: the next pass does not report it again, and a late live copy is dropped.
    assert await resync.run() == 0
    assert not ledger.admit(end("call.missed", user={"id": ME}))
    assert not ledger.admit(end("call.ended", reason="timeout"))


async def test_unsettled_ring_whose_miss_came_live_is_not_reported_twice() -> None:
    server = Server()
    ledger = RingLedger(ME)
    ledger.admit(ring(ringing=[ME]))
    ledger.admit(Event(type="connection.lost"))
    assert ledger.admit(end("call.missed", user={"id": ME}))
    server.calls["default:c1"] = call(missed_by={ME: 1}, ended_at=2, end_reason="timeout")
    resync, emitted = make_resync(server, ledger, {})
    await resync.run()
    # The miss came live; the resync adds only the end it had not been told.
    assert [e.type for e in emitted] == ["call.ended"]


def test_ledger_tells_each_end_of_a_ring_once_in_any_order() -> None:
    ledger = RingLedger(ME)
    ledger.admit(ring())
    assert ledger.admit(end("call.session_ended", session_id="s1"))
    assert ledger.admit(end("call.ended"))
    assert not ledger.admit(end("call.ended", resynced=True))
    assert not ledger.admit(end("call.session_ended", session_id="s1"))


S = 1_000_000_000  # ns


async def test_a_ring_that_began_and_ended_while_away_is_told_as_missed_once() -> None:
    """Never heard here (it began and ended while away), missed by me: one ``call.missed``
    after the reconnect, none on the next pass, and the live one arriving late is a repeat."""
    server = Server()
    server.open = [
        CallResponse(call=call("default:m", missed_by={ME: 105 * S}, ring_started_at=100 * S)),
        # Before the window: an old miss the device was told about long ago.
        CallResponse(call=call("default:old", missed_by={ME: 45 * S}, ring_started_at=40 * S)),
        # Missed by someone else only; and one I answered.
        CallResponse(call=call("default:o", missed_by={"x": 1}, ring_started_at=100 * S)),
        CallResponse(call=call("default:a", accepted_by={ME: 1}, ring_started_at=100 * S)),
    ]
    ledger = RingLedger(ME)
    resync, emitted = make_resync(server, ledger, {})
    assert await resync.run(90 * S) == 1
    assert server.asked_since == [90 * S]
    assert [(e.type, e.cid, e.user.id if e.user else None, e.resynced) for e in emitted] == [
        ("call.missed", "default:m", ME, True)
    ]
    assert await resync.run(90 * S) == 0
    live = Event.model_validate(
        {"type": "call.missed", "call_cid": "default:m", "session_id": "s1", "user": {"id": ME}}
    )
    assert not ledger.admit(live)
    # Without a window (first connect) nothing is looked for.
    fresh, told = make_resync(server, RingLedger(ME), {})
    assert await fresh.run() == 0
    assert told == []


async def test_a_live_missed_first_makes_the_resync_one_a_repeat() -> None:
    server = Server()
    server.open = [
        CallResponse(call=call("default:m", missed_by={ME: 105 * S}, ring_started_at=100 * S))
    ]
    ledger = RingLedger(ME)
    live = Event.model_validate(
        {"type": "call.missed", "call_cid": "default:m", "session_id": "s1", "user": {"id": ME}}
    )
    assert ledger.admit(live)
    resync, emitted = make_resync(server, ledger, {})
    assert await resync.run(90 * S) == 0
    assert emitted == []
