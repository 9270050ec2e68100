"""The door unlock (docs/architecture.md): a custom event ``{"type": "unlock"}`` from a participant of the
live session whose MEMBER role is in ``relay.unlock_roles`` pulses the relay (rate-limited by
the relay), is logged on the audit trail, answered with ``{"type": "unlock.result", "ok",
"reason"}``, and the call hangs up ``hangup_after_unlock_s`` later.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.daemon.audit import audit
from appliance.daemon.ports import CallState, LinkEvent, Machine

log = logging.getLogger(__name__)


async def handle_custom(m: Machine, event: LinkEvent) -> None:
    custom = event.custom or {}
    if custom.get("type") != "unlock":
        return
    user = event.user_id
    ok, reason = await _decide(m, event)
    if ok:
        result = m.panel.unlock(user)
        ok, reason = result.ok, result.reason
    record: dict[str, Any] = {"at": m.clock.time(), "user": user, "ok": ok, "reason": reason}
    m.unlocks.append(record)
    audit("unlock", event.call_cid, user, "door unlocked" if ok else f"unlock refused: {reason}")
    assert event.call_cid is not None
    await m.link.send_event(
        event.call_cid, {"type": "unlock.result", "ok": ok, "reason": reason, "user_id": user}
    )
    relay = m.cfg.relay
    if ok and relay is not None and relay.hangup_after_unlock_s is not None:
        await m.clock.sleep(relay.hangup_after_unlock_s)
        if m.call_state in (CallState.IN_CALL, CallState.CONNECTING) and m.cid == event.call_cid:
            await m.hang_up("after unlock")


async def _decide(m: Machine, event: LinkEvent) -> tuple[bool, str]:
    relay = m.cfg.relay
    if relay is None:
        return False, "no_relay"
    if m.call_state is not CallState.IN_CALL or m.joined is None:
        return False, "not_in_call"
    if event.user_id not in m.joined.participants.values():
        return False, "not_a_participant"
    role = await m.link.member_role(event.call_cid or "", event.user_id or "")
    if role not in relay.unlock_roles:
        log.info("Daemon(%s) unlock by %s refused: role %s", m.me, event.user_id, role)
        return False, "role_not_allowed"
    return True, "ok"
