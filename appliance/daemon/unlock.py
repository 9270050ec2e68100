"""The door unlock (DESIGN §4): a custom event ``{"type": "unlock"}`` from a participant of the
live session whose MEMBER role is in ``relay.unlock_roles`` pulses the relay (rate-limited by
the relay), is logged on the audit trail, answered with ``{"type": "unlock.result", "ok",
"reason"}``, and the call hangs up ``hangup_after_unlock_s`` later.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from appliance.daemon.ports import CallState, LinkEvent

if TYPE_CHECKING:
    from appliance.daemon.machine import Daemon

log = logging.getLogger(__name__)


async def handle_custom(d: Daemon, event: LinkEvent) -> None:
    custom = event.custom or {}
    if custom.get("type") != "unlock":
        return
    from appliance.daemon.audit import audit

    user = event.user_id
    ok, reason = await _decide(d, event)
    if ok:
        result = d.panel.unlock(user)
        ok, reason = result.ok, result.reason
    record: dict[str, Any] = {"at": d.clock.time(), "user": user, "ok": ok, "reason": reason}
    d.unlocks.append(record)
    audit("unlock", event.call_cid, user, "door unlocked" if ok else f"unlock refused: {reason}")
    assert event.call_cid is not None
    await d.link.send_event(
        event.call_cid, {"type": "unlock.result", "ok": ok, "reason": reason, "user_id": user}
    )
    relay = d.cfg.relay
    if ok and relay is not None and relay.hangup_after_unlock_s is not None:
        await d.clock.sleep(relay.hangup_after_unlock_s)
        if d.call_state in (CallState.IN_CALL, CallState.CONNECTING) and d.cid == event.call_cid:
            await d.hang_up("after unlock")


async def _decide(d: Daemon, event: LinkEvent) -> tuple[bool, str]:
    relay = d.cfg.relay
    if relay is None:
        return False, "no_relay"
    if d.call_state is not CallState.IN_CALL or d.joined is None:
        return False, "not_in_call"
    if event.user_id not in d.joined.participants.values():
        return False, "not_a_participant"
    role = await d.link.member_role(event.call_cid or "", event.user_id or "")
    if role not in relay.unlock_roles:
        log.info("Daemon(%s) unlock by %s refused: role %s", d.me, event.user_id, role)
        return False, "role_not_allowed"
    return True, "ok"
