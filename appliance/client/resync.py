"""Keeping a device in step with the server across reconnects: no ring missed, none replayed.

Two pieces:

* :class:`RingLedger` sees every event before consumers do. A ring is identified by
  ``(call_cid, session id, ring start)``; a ``call.ring`` for a ring already delivered (the hub
  re-sends pending rings on ``connection.ok``, and the resync finds them too) is dropped, and a ring
  that ended (accepted anywhere, rejected or missed by me, call ended) is remembered as finished
  so that it is never delivered again. Each end of a finished ring (``call.missed``,
  ``call.ended``, …) is delivered once, however it arrives: live, or from a resync.
* :class:`Resync` runs after each reconnect: it re-reads the calls in use (joined, or ringing
  here) and the calls I am a member of that have not ended, and emits what changed while away —
  ``call.ring`` for a ring that started meanwhile (also on a call id never seen before),
  ``call.accepted`` / ``call.rejected`` / ``call.missed`` / ``call.ended`` for rings and sessions
  that finished, ``call.session_participant_left`` / ``_joined`` for participants. Those events
  carry ``resynced=True``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.calls import events as ev
from appliance.client.events import CONNECTION_LOST, Event
from appliance.client.models import CallInfo, CallResponse, User
from appliance.errors import NotFound

logger = logging.getLogger(__name__)

RingKey = tuple[str, str, Any]

# Events after which nobody rings any more in that call's session.
_RING_OVER_FOR_ALL = {ev.CALL_ACCEPTED, ev.CALL_ENDED, ev.CALL_SESSION_ENDED, ev.CALL_DELETED}
# Events that end the ring only for the user they name.
_RING_OVER_FOR_USER = {ev.CALL_REJECTED, ev.CALL_MISSED}


def ring_key(call: CallInfo) -> RingKey | None:
    session = call.session
    session_id = session.id if session is not None else call.current_session_id
    if not session_id:
        return None
    started = session.ring_started_at if session is not None else None
    return (call.cid, session_id, started)


class RingLedger:
    """Which rings this user has been told about, and which of them are over."""

    def __init__(self, user_id: str | None, *, remember: int = 1000) -> None:
        self.user_id = user_id
        self.ringing: dict[str, RingKey] = {}
        self._finished: OrderedDict[RingKey, None] = OrderedDict()
        # The ends told of each finished ring, by (call cid, session id): a repeat is dropped.
        self._outcomes: dict[tuple[str, str | None], set[str]] = {}
        # Rings that were ringing when the connection dropped, until a resync has read them:
        # the next socket can tell one's end (``call.ended``) before the resync reads how it
        # ended for me (``call.missed``), and the resync must still report that.
        self.unsettled: dict[str, RingKey] = {}
        self._remember = remember

    def admit(self, event: Event) -> bool:
        """Record ``event``; False when it is a ring this user was already given (a replay)."""
        if event.type == CONNECTION_LOST:
            self.unsettled.update(self.ringing)
            return True
        cid = event.cid
        if event.type == ev.CALL_RING and event.call is not None:
            key = ring_key(event.call)
            if key is None:
                return True
            if self.ringing.get(key[0]) == key or key in self._finished:
                logger.debug("RingLedger(%s): ring %s already delivered", self.user_id, key)
                return False
            self.ringing[key[0]] = key
            return True
        if cid is None:
            return True
        mine = event.user is not None and event.user.id == self.user_id
        ends = event.type in _RING_OVER_FOR_ALL or (event.type in _RING_OVER_FOR_USER and mine)
        if cid not in self.ringing:
            # The same end of a ring told twice: live, and by the resync of a reconnect that read
            # the store after the commit but before the live event reached the new socket.
            sid = event.session_id or event.call_session_id
            told = self._outcomes.get((cid, sid))
            if told is None and event.type == ev.CALL_MISSED and mine and sid is not None:
                # My miss of a ring never heard here (it began and ended while away): told
                # live or by the resync, whichever comes first; the other is a repeat.
                self._outcomes[(cid, sid)] = {event.type}
                self._trim()
                return True
            if ends and told is not None:
                if event.type in told:
                    logger.debug(
                        "RingLedger(%s): %s of %s already delivered", self.user_id, event.type, cid
                    )
                    return False
                told.add(event.type)
            return True
        if ends:
            self._finish(cid, event.type)
        return True

    def _finish(self, cid: str, outcome: str) -> None:
        key = self.ringing.pop(cid, None)
        if key is None:
            return
        self._finished[key] = None
        self._outcomes[(key[0], key[1])] = {outcome}
        self._trim()

    def finished_unheard(self, key: RingKey, outcome: str) -> None:
        """A ring never delivered here whose end (``outcome``) was just told: never again."""
        self._finished[key] = None
        self._outcomes.setdefault((key[0], key[1]), set()).add(outcome)
        self._trim()

    def _trim(self) -> None:
        while len(self._outcomes) > self._remember:
            self._outcomes.pop(next(iter(self._outcomes)))
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)

    def is_delivered(self, key: RingKey) -> bool:
        return self.ringing.get(key[0]) == key or key in self._finished

    def settled(self, read: dict[str, RingKey]) -> None:
        """A resync read these unsettled rings (and emitted how they ended)."""
        for cid, key in read.items():
            if self.unsettled.get(cid) == key:
                del self.unsettled[cid]


GetCall = Callable[[str], Awaitable[CallResponse]]
OpenCalls = Callable[[int | None], Awaitable[list[CallResponse]]]
Emit = Callable[[Event], None]


class Resync:
    """Diff the server's truth against what the device last knew, and emit the difference."""

    def __init__(
        self,
        user_id: str | None,
        ledger: RingLedger,
        snapshots: dict[str, CallInfo],
        *,
        get_call: GetCall,
        open_calls: OpenCalls,
        admit: Callable[[Event], bool],
        emit: Emit,
    ) -> None:
        self.user_id = user_id
        self.ledger = ledger
        self.snapshots = snapshots
        self.get_call = get_call
        self.open_calls = open_calls
        self.admit = admit
        self.emit = emit
        self.passes = 0

    async def run(self, missed_since: int | None = None) -> int:
        """One resync pass; returns the number of events emitted. ``missed_since`` (server
        time, ns; after a drop): also report ``call.missed`` for my rings that began since then
        and that I missed without ever hearing them ring (they began and ended while away)."""
        count = 0
        before = dict(self.snapshots)
        unsettled = dict(self.ledger.unsettled)
        in_use = set(before) | set(self.ledger.ringing) | set(unsettled)
        for cid in sorted(in_use):
            try:
                truth = await self.get_call(cid)
            except NotFound:
                count += self._emit(Event(type=ev.CALL_DELETED, call_cid=cid, resynced=True))
                self.snapshots.pop(cid, None)
                continue
            count += self._diff(before.get(cid), truth.call, unsettled.get(cid))
        if self.user_id is not None:
            for response in await self.open_calls(missed_since):
                count += self._new_ring(response)
                if missed_since is not None:
                    count += self._missed_unheard(response, missed_since)
        self.ledger.settled(unsettled)
        self.passes += 1
        logger.info("Resync(%s): %d event(s) from while away", self.user_id, count)
        return count

    def _emit(self, event: Event) -> int:
        if not self.admit(event):
            return 0
        self.emit(event)
        return 1

    def _event(self, kind: str, call: CallInfo, **fields: Any) -> Event:
        return Event(type=kind, call_cid=call.cid, call=call, resynced=True, **fields)

    def _diff(self, old: CallInfo | None, call: CallInfo, unsettled: RingKey | None) -> int:
        count = 0
        # A ring still ringing here, or one that rang when the connection dropped and whose
        # end the new socket may have told already (the ledger drops what was told).
        key = self.ledger.ringing.get(call.cid) or unsettled
        if key is not None:
            count += self._ring_outcome(call, key, tracked=old is not None)
        if old is not None:
            # Stored first: a consumer of the events below may drop it (call over).
            self.snapshots[call.cid] = call
            count += self._session_changes(old, call)
        return count

    def _ring_outcome(self, call: CallInfo, key: RingKey, *, tracked: bool) -> int:
        """How a ring delivered here ended while away: accepted (by anyone), or rejected or
        missed by me; then the end of its session, unless the snapshot diff reports that."""
        session = call.session
        same = session is not None and session.id == key[1]
        count = 0
        if same and session is not None:
            me = self.user_id or ""
            if session.accepted_by:
                uid = next(iter(session.accepted_by))
                count += self._emit(self._event(ev.CALL_ACCEPTED, call, user=User(id=uid)))
            elif me in session.rejected_by:
                count += self._emit(self._event(ev.CALL_REJECTED, call, user=User(id=me)))
            elif me in session.missed_by:
                count += self._emit(self._event(ev.CALL_MISSED, call, user=User(id=me)))
        over = not same or session is None or not session.live
        if over and not tracked:
            reason = session.end_reason if same and session is not None else None
            count += self._emit(self._event(ev.CALL_ENDED, call, reason=reason))
        return count

    def _session_changes(self, old: CallInfo, new: CallInfo) -> int:
        count = 0
        old_session = old.live_session
        new_session = new.live_session
        if old_session is not None and (new_session is None or new_session.id != old_session.id):
            ended = new.session if new.session and new.session.id == old_session.id else None
            reason = ended.end_reason if ended is not None else None
            count += self._emit(self._event(ev.CALL_ENDED, new, reason=reason))
            count += self._emit(self._event(ev.CALL_SESSION_ENDED, new, session_id=old_session.id))
            return count
        if new_session is None:
            return count
        before = {p.session_id: p for p in old_session.participants} if old_session else {}
        after = {p.session_id: p for p in new_session.participants}
        for sid, participant in after.items():
            if sid not in before:
                count += self._emit(
                    self._event(
                        ev.CALL_SESSION_PARTICIPANT_JOINED,
                        new,
                        session_id=new_session.id,
                        participant=participant,
                        user=participant.user,
                    )
                )
        for sid, participant in before.items():
            if sid not in after:
                count += self._emit(
                    self._event(
                        ev.CALL_SESSION_PARTICIPANT_LEFT,
                        new,
                        session_id=new_session.id,
                        participant=participant,
                        user=participant.user,
                    )
                )
        return count

    def _missed_unheard(self, response: CallResponse, since: int) -> int:
        """``call.missed`` (once) for a ring of mine that began at or after ``since`` and that I
        missed (the server's ``missed_by``) without this device having been told it rang."""
        call = response.call
        session = call.session
        me = self.user_id or ""
        if session is None or me not in session.missed_by or session.ring_started_at is None:
            return 0
        key = ring_key(call)
        started_ns = int(session.ring_started_at.timestamp() * 1_000_000_000)
        if key is None or started_ns < since or self.ledger.is_delivered(key):
            return 0
        count = self._emit(self._event(ev.CALL_MISSED, call, user=User(id=me)))
        self.ledger.finished_unheard(key, ev.CALL_MISSED)
        return count

    def _new_ring(self, response: CallResponse) -> int:
        call = response.call
        session = call.live_session
        if session is None or self.user_id not in session.ringing:
            return 0
        key = ring_key(call)
        if key is None or self.ledger.is_delivered(key):
            return 0
        caller = User(id=session.rung_by) if session.rung_by else call.created_by
        return self._emit(self._event(ev.CALL_RING, call, user=caller, members=response.members))
