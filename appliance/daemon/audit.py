"""The audit trail: every ring, answer, auto-answer, unlock, mute and appointment, on the
``appliance.audit`` logger with ``extra`` fields ``call_cid``, ``user`` and ``action`` (under
systemd, :mod:`appliance.journal` turns them into journal fields)."""

from __future__ import annotations

import logging

audit_log = logging.getLogger("appliance.audit")


def audit(action: str, call_cid: str | None, user: str | None, detail: str) -> None:
    audit_log.info(
        "%s %s by %s: %s",
        action,
        call_cid or "-",
        user or "-",
        detail,
        extra={"call_cid": call_cid, "user": user, "action": action},
    )
