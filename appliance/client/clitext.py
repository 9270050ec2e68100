"""Command-line text in and out: ``--member bob:admin``, ``--custom k=v``, ``--filter role=admin``,
``--sort -created_at``, and the human-readable rendering of calls and members."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from appliance.client.call import MemberRequest, SortPair
from appliance.client.models import CallResponse, Member
from appliance.errors import InvalidRequest

_OPERATORS = {"=": "$eq", "!=": "$ne", ">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt"}
_FILTER = re.compile(r"^(?P<field>[A-Za-z0-9_.\-]+)(?P<op>!=|>=|<=|=|>|<)(?P<value>.*)$")


def parse_value(text: str) -> Any:
    """``2`` → 2, ``true`` → True, ``{"a":1}`` → dict; anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_custom(pairs: list[str]) -> dict[str, Any]:
    custom: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"--custom {pair!r}: expected KEY=VALUE", field="--custom")
        custom[key] = parse_value(value)
    return custom


def parse_member(text: str) -> MemberRequest:
    user_id, _, role = text.partition(":")
    if not user_id:
        raise InvalidRequest(f"--member {text!r}: expected USER[:ROLE]", field="--member")
    return MemberRequest(user_id=user_id, role=role or None)


def parse_filters(texts: list[str]) -> dict[str, Any]:
    """``role=admin`` and ``custom.floor>=2`` → one ``filter_conditions`` (all must hold)."""
    clauses: list[dict[str, Any]] = []
    for text in texts:
        match = _FILTER.match(text)
        if match is None:
            raise InvalidRequest(
                f"--filter {text!r}: expected FIELD<op>VALUE with op one of = != > >= < <=",
                field="--filter",
            )
        value = parse_value(match["value"])
        clauses.append({match["field"]: {_OPERATORS[match["op"]]: value}})
    if len(clauses) == 1:
        return clauses[0]
    return {"$and": clauses} if clauses else {}


def parse_cid(text: str | None) -> str | None:
    """``--call TYPE:ID`` → the call cid (None: every call)."""
    if text is None:
        return None
    call_type, sep, call_id = text.partition(":")
    if not sep or not call_type or not call_id or ":" in call_id:
        raise InvalidRequest(
            f"--call {text!r}: expected TYPE:ID, e.g. default:door-1", field="--call"
        )
    return text


def parse_sort(text: str) -> SortPair:
    field = text.lstrip("+-")
    if not field:
        raise InvalidRequest(f"--sort {text!r}: expected [-]FIELD", field="--sort")
    return (field, -1 if text.startswith("-") else 1)


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


def member_line(member: Member) -> str:
    custom = json.dumps(member.custom, sort_keys=True) if member.custom else ""
    return f"{member.user_id:<24} {member.role or '-':<12} {_when(member.created_at):<26} {custom}"


def call_text(response: CallResponse) -> str:
    call = response.call
    state = "created" if response.created else "ended" if call.ended_at else "exists"
    lines = [f"call {call.cid} ({state})"]
    creator = call.created_by.id if call.created_by else "-"
    lines.append(f"  created by {creator} at {_when(call.created_at)}")
    lines.append(f"  team: {call.team or '-'}   starts at: {_when(call.starts_at)}")
    if call.custom:
        lines.append(f"  custom: {json.dumps(call.custom, sort_keys=True)}")
    session = call.session
    if session is not None and session.id:
        live = "live" if session.live else f"ended {_when(session.ended_at)}"
        lines.append(f"  session {session.id} ({live})")
        for label, users in (
            ("ringing", session.ringing),
            ("accepted by", list(session.accepted_by)),
            ("rejected by", list(session.rejected_by)),
            ("missed by", list(session.missed_by)),
            ("participants", [p.user_id or p.session_id for p in session.participants]),
        ):
            if users:
                lines.append(f"    {label}: {', '.join(str(u) for u in users)}")
    lines.append(f"  members ({len(response.members)}):")
    lines.extend(f"    {member_line(m)}" for m in response.members)
    return "\n".join(lines)
