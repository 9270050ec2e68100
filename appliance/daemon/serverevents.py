"""How the state machine reacts to server events (DESIGN §4 ringing, participants, custom
events) and to the server link going on and off line. Every call-state change still goes
through :meth:`Daemon.transition`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from appliance.daemon.audit import audit
from appliance.daemon.config import Mode
from appliance.daemon.ports import CallState as S
from appliance.daemon.ports import LinkEvent, LinkState
from appliance.daemon.unlock import handle_custom

if TYPE_CHECKING:
    from appliance.daemon.machine import Daemon

log = logging.getLogger("appliance.daemon.machine")


def handle(d: Daemon, event: LinkEvent) -> None:
    """React to one server event (or the link going on/offline)."""
    kind = event.type
    if kind in ("link.online", "link.offline"):
        _on_link(d, kind == "link.online")
        return
    mine = event.call_cid is not None and event.call_cid == d.cid
    state = d.call_state
    if kind == "call.ring":
        _on_ring(d, event)
    elif kind == "call.accepted" and mine:
        if state is S.CALLING and event.user_id != d.me:
            audit("accepted", d.cid, event.user_id, "answered by")
            d.transition(S.CONNECTING, f"accepted by {event.user_id}")
            d._call_task(d._join_after(d.cid or "", event.user_id))
        elif state is S.RINGING and event.user_id != d.me:
            d.transition(S.IDLE, f"answered elsewhere by {event.user_id}")
    elif kind == "call.rejected" and mine and state is S.RINGING:
        if event.user_id == d.caller or event.reason == "cancel":
            d._mark_missed()
            d.transition(S.IDLE, "caller cancelled")
    elif kind == "call.missed" and mine and event.user_id == d.me and state is S.RINGING:
        d._mark_missed()
        d.transition(S.IDLE, "missed")
    elif kind == "call.ended" and mine:
        if state in (S.CALLING, S.RINGING):
            if event.reason in ("timeout", "rejected", "cancelled", None):
                d._mark_missed()
            d.transition(S.IDLE, f"ended ({event.reason})")
        else:
            d.end_locally("call.ended")
    elif kind == "call.session_participant_joined" and mine:
        if d.joined is not None and event.participant_session and event.user_id:
            d.joined.participants[event.participant_session] = event.user_id
            _on_further_participant(d, event.user_id)
        if event.user_id is not None:
            d._arrived.add(event.user_id)
            d._arrival.set()
    elif kind == "call.session_participant_left" and mine and d.joined is not None:
        _on_participant_left(d, event)
    elif kind == "custom" and mine and event.user_id != d.me:
        d._call_task(handle_custom(d, event))


def _on_link(d: Daemon, online: bool) -> None:
    new = LinkState.ONLINE if online else LinkState.OFFLINE
    if new is d.link_state:
        return
    log.info("Daemon(%s) server link %s -> %s", d.me, d.link_state.value, new.value)
    d.link_state = new
    if online:
        d._ever_online.set()
        d.modes.on_reconnect()
    d.refresh_leds()


def _on_ring(d: Daemon, event: LinkEvent) -> None:
    if event.user_id == d.me or event.call_cid is None:
        return
    if d.cfg.mode is Mode.AUTO_JOIN:
        return
    if d.call_state is not S.IDLE:
        if event.call_cid != d.cid:
            log.info("Daemon(%s) busy: rejecting ring on %s", d.me, event.call_cid)
            d.spawn(d.link.reject(event.call_cid, "busy"))
        return
    d.cid = event.call_cid
    d.caller = event.user_id
    audit("ring", d.cid, d.caller, "incoming ring")
    d.transition(S.RINGING, f"rung by {d.caller}")
    d.modes.maybe_auto_answer()


def _on_further_participant(d: Daemon, user_id: str) -> None:
    """A third (or later) person joined the call this device talks in: on the audit trail,
    like the ring and the answer, so the journal says who else was in the conversation."""
    assert d.joined is not None
    others = sorted({u for s, u in d.joined.participants.items() if s != d.joined.session_id})
    if user_id == d.me or len(others) < 2:
        return
    audit("joined", d.cid, user_id, f"joined the call too (now with {', '.join(others)})")


def _on_participant_left(d: Daemon, event: LinkEvent) -> None:
    assert d.joined is not None
    if event.participant_session == d.joined.session_id:
        d.end_locally("removed from the session")
        return
    d.joined.participants.pop(event.participant_session or "", None)
    others = [s for s in d.joined.participants if s != d.joined.session_id]
    if not others and d.call_state is S.IN_CALL and d.cfg.mode is not Mode.AUTO_JOIN:
        d.end_locally("the other side left")
