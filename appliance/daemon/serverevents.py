"""How the state machine reacts to server events (ringing, participants, custom events; the
rules are in docs/architecture.md) and to the server link going on and off line. It drives the
machine through :class:`appliance.daemon.ports.Machine`; every call-state change still goes
through its ``transition``."""

from __future__ import annotations

import logging

from appliance.daemon.audit import audit
from appliance.daemon.config import Mode
from appliance.daemon.ports import CallState, LinkEvent, LinkState, Machine
from appliance.daemon.unlock import handle_custom

log = logging.getLogger("appliance.daemon.machine")


def handle(m: Machine, event: LinkEvent) -> None:
    """React to one server event (or the link going on/offline)."""
    kind = event.type
    if kind in ("link.online", "link.offline"):
        _on_link(m, kind == "link.online")
        return
    mine = event.call_cid is not None and event.call_cid == m.cid
    state = m.call_state
    if kind == "call.ring":
        _on_ring(m, event)
    elif kind == "call.accepted" and mine:
        if state is CallState.CALLING and event.user_id != m.me:
            audit("accepted", m.cid, event.user_id, "answered by")
            m.accepted_by(event.user_id)
        elif state is CallState.RINGING and event.user_id != m.me:
            m.transition(CallState.IDLE, f"answered elsewhere by {event.user_id}")
    elif kind == "call.rejected" and mine and state is CallState.RINGING:
        if event.user_id == m.caller or event.reason == "cancel":
            m.indications.missed()
            m.transition(CallState.IDLE, "caller cancelled")
    elif kind == "call.missed" and mine and event.user_id == m.me and state is CallState.RINGING:
        m.indications.missed()
        m.transition(CallState.IDLE, "missed")
    elif kind == "call.ended" and mine:
        if state in (CallState.CALLING, CallState.RINGING):
            if event.reason in ("timeout", "rejected", "cancelled", None):
                m.indications.missed()
            m.transition(CallState.IDLE, f"ended ({event.reason})")
        else:
            m.end_locally("call.ended")
    elif kind == "call.session_participant_joined" and mine:
        if m.joined is not None and event.participant_session and event.user_id:
            m.joined.participants[event.participant_session] = event.user_id
            _on_further_participant(m, event.user_id)
        if event.user_id is not None:
            m.participant_arrived(event.user_id)
    elif kind == "call.session_participant_left" and mine and m.joined is not None:
        _on_participant_left(m, event)
    elif kind == "custom" and mine and event.user_id != m.me:
        m.call_task(handle_custom(m, event))


def _on_link(m: Machine, online: bool) -> None:
    new = LinkState.ONLINE if online else LinkState.OFFLINE
    if new is m.link_state:
        return
    log.info("Daemon(%s) server link %s -> %s", m.me, m.link_state.value, new.value)
    m.set_link_state(new)


def _on_ring(m: Machine, event: LinkEvent) -> None:
    if event.user_id == m.me or event.call_cid is None:
        return
    if m.cfg.mode is Mode.AUTO_JOIN:
        return
    if m.call_state is not CallState.IDLE:
        if event.call_cid != m.cid:
            log.info("Daemon(%s) busy: rejecting ring on %s", m.me, event.call_cid)
            m.spawn(m.link.reject(event.call_cid, "busy"))
        return
    m.ring_in(event.call_cid, event.user_id)


def _on_further_participant(m: Machine, user_id: str) -> None:
    """A third (or later) person joined the call this device talks in: on the audit trail,
    like the ring and the answer, so the journal says who else was in the conversation."""
    assert m.joined is not None
    others = sorted({u for s, u in m.joined.participants.items() if s != m.joined.session_id})
    if user_id == m.me or len(others) < 2:
        return
    audit("joined", m.cid, user_id, f"joined the call too (now with {', '.join(others)})")


def _on_participant_left(m: Machine, event: LinkEvent) -> None:
    assert m.joined is not None
    if event.participant_session == m.joined.session_id:
        m.end_locally("removed from the session")
        return
    m.joined.participants.pop(event.participant_session or "", None)
    others = [s for s in m.joined.participants if s != m.joined.session_id]
    if not others and m.call_state is CallState.IN_CALL and m.cfg.mode is not Mode.AUTO_JOIN:
        m.end_locally("the other side left")
