"""What a ring says to a phone through Web Push: the messages, their ``Topic`` and lifetime.

The ring engine decides, inside its transaction, that users start or stop ringing; it appends
a ``RingPush`` to the transaction's outbox, and after the commit the push sender
(``pushsender.py``) delivers it to those users' subscriptions. Payloads (JSON, UTF-8):

- ``{"type": "call.ring", "call_cid", "session_id", "caller": {"id", "name"}, "custom",
  "video", "created_at", "expires_at"}`` (times: integer nanoseconds, like the API);
- ``{"type": "call.ring_stopped", "call_cid", "session_id", "reason"}`` with ``reason`` one
  of ``accepted`` (someone answered; also sent to the one who did, for their other devices),
  ``rejected`` (this user declined, on some device), ``cancelled`` (the caller hung up),
  ``missed`` (nobody answered in time: the page shows **Missed call**), ``ended`` (the call
  ended some other way).

A push message holds at most 4096 bytes once encrypted, 3993 of plaintext: a ring whose
``custom`` would not fit is sent with ``"custom": {}`` and ``"custom_trimmed": true`` (the page
gets the call's full custom data with the call). Both messages of one user's ring carry the
same ``Topic`` (RFC 8030 §5.4: a push service replaces an undelivered message with a newer one
of the same topic), 32 base64url characters of an HMAC of the call and the user, so the topic
tells a push service neither.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from appliance.server.outbound.vapid import b64url

NS = 1_000_000_000
# aes128gcm, one record: 4096 - (16 salt + 4 rs + 1 idlen + 65 key id) - 16 tag - 1 delimiter.
MAX_PLAINTEXT = 3993
# A ring with no timeout configured is pushed as lasting this long.
UNTIMED_RING_SECONDS = 60
# How long a push service keeps a "ring stopped" for an offline phone; "missed" longer: it is
# what the phone shows when it comes back.
STOPPED_TTL_SECONDS = 3600
MISSED_TTL_SECONDS = 86_400
REASONS = ("accepted", "rejected", "cancelled", "missed", "ended")


@dataclass(frozen=True)
class RingPush:
    """Users whose ring started (``kind="ring"``) or stopped (``kind="stopped"``)."""

    kind: str
    call_cid: str
    session_id: str
    ring_at: int  # the ring attempt's start (call_sessions.ring_started_at), ns
    user_ids: tuple[str, ...]
    reason: str = ""
    caller: dict[str, Any] = field(default_factory=dict)
    video: bool = False
    expires_at: int = 0
    custom: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        what = self.kind if self.kind == "ring" else f"stopped:{self.reason}"
        return f"RingPush({what} {self.call_cid} to {len(self.user_ids)} users)"

    @property
    def urgency(self) -> str:
        return "normal" if self.reason == "missed" else "high"

    def ttl(self, now_ns: int) -> int:
        """Seconds a push service should keep it for a phone that is offline now."""
        if self.kind == "ring":
            return max(0, math.ceil((self.expires_at - now_ns) / NS))
        return MISSED_TTL_SECONDS if self.reason == "missed" else STOPPED_TTL_SECONDS

    def payload(self, created_at: int) -> bytes:
        if self.kind != "ring":
            return _dump(
                {
                    "type": "call.ring_stopped",
                    "call_cid": self.call_cid,
                    "session_id": self.session_id,
                    "reason": self.reason,
                }
            )
        body: dict[str, Any] = {
            "type": "call.ring",
            "call_cid": self.call_cid,
            "session_id": self.session_id,
            "caller": {"id": self.caller.get("id"), "name": self.caller.get("name")},
            "custom": self.custom,
            "video": self.video,
            "created_at": created_at,
            "expires_at": self.expires_at,
        }
        data = _dump(body)
        if len(data) > MAX_PLAINTEXT:
            body["custom"] = {}
            body["custom_trimmed"] = True
            data = _dump(body)
        return data


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def topic(secret: str, call_cid: str, user_id: str) -> str:
    """32 base64url characters naming one user's ring of one call (RFC 8030 ``Topic``)."""
    mac = hmac.new(secret.encode(), f"{call_cid}\n{user_id}".encode(), hashlib.sha256)
    return b64url(mac.digest()[:24])


def stop_reason(end_reason: str) -> str:
    """The ``ring_stopped`` reason for ringing cut short by a session's end."""
    return {"cancelled": "cancelled", "timeout": "missed", "rejected": "rejected"}.get(
        end_reason, "ended"
    )


def stopped(
    pushes: list[RingPush], session: dict[str, Any], user_ids: Iterable[str], reason: str
) -> None:
    """These users' ring of ``session`` stopped: append it to an outbox's ``pushes``."""
    users = tuple(user_ids)
    if users and session.get("ring_started_at") is not None:
        pushes.append(
            RingPush(
                "stopped",
                session["call_cid"],
                session["id"],
                session["ring_started_at"],
                users,
                reason=reason,
            )
        )
