"""Typed views of the call API's answers (README.md, "Call server"), as the client sees them.

The server sends timestamps as integer nanoseconds since the epoch; these models turn them into
timezone-aware ``datetime``s. Every model keeps fields it does not know (``extra="allow"``), so a
newer server never breaks an older device.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator


def _to_datetime(value: Any) -> Any:
    """Integer/float nanoseconds since the epoch (the server's form) or RFC 3339 → datetime."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1_000_000_000, tz=UTC)
    if isinstance(value, str) and value.isdigit():
        return datetime.fromtimestamp(int(value) / 1_000_000_000, tz=UTC)
    return value


Timestamp = Annotated[datetime, BeforeValidator(_to_datetime)]


def _capability_names(value: Any) -> Any:
    if isinstance(value, list):
        return [item.get("name") if isinstance(item, dict) else item for item in value]
    return value


class Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class User(Model):
    id: str
    name: str | None = None
    image: str | None = None
    role: str = "user"
    teams: list[str] = Field(default_factory=list)
    custom: dict[str, Any] = Field(default_factory=dict)
    online: bool | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Member(Model):
    user_id: str
    role: str | None = None
    custom: dict[str, Any] = Field(default_factory=dict)
    user: User | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Participant(Model):
    """A participant of a live session; ``session_id`` is what signaling addresses."""

    session_id: str = Field(validation_alias=AliasChoices("user_session_id", "session_id", "id"))
    user_id: str | None = None
    user: User | None = None
    role: str | None = None
    joined_at: Timestamp | None = None

    @model_validator(mode="after")
    def _user_id_from_user(self) -> Participant:
        if self.user_id is None and self.user is not None:
            self.user_id = self.user.id
        return self


class CallSession(Model):
    """One session of a call: ring outcome (accepted/rejected/missed) and participants."""

    id: str
    participants: list[Participant] = Field(default_factory=list)
    accepted_by: dict[str, Timestamp] = Field(default_factory=dict)
    rejected_by: dict[str, Timestamp] = Field(default_factory=dict)
    missed_by: dict[str, Timestamp] = Field(default_factory=dict)
    # Users still ringing in this session (our server's extension of Stream's session).
    ringing: list[str] = Field(default_factory=list)
    rung_by: str | None = None
    ring_started_at: Timestamp | None = None
    started_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    end_reason: str | None = None

    @property
    def live(self) -> bool:
        return self.ended_at is None


class RingSettings(Model):
    auto_cancel_timeout_ms: int | None = None
    incoming_call_timeout_ms: int | None = None
    missed_call_timeout_ms: int | None = None


class MediaSettings(Model):
    enabled: bool | None = None


class LimitsSettings(Model):
    max_participants: int | None = None
    max_duration_seconds: int | None = None


class BackstageSettings(Model):
    enabled: bool | None = None
    join_ahead_time_seconds: int | None = None


class CallSettings(Model):
    """The effective settings of a call (type settings with the call's override applied)."""

    audio: MediaSettings | None = None
    video: MediaSettings | None = None
    ring: RingSettings | None = None
    backstage: BackstageSettings | None = None
    limits: LimitsSettings | None = None


class CallInfo(Model):
    """The ``call`` object of a response."""

    type: str
    id: str
    cid: str
    created_by: User | None = None
    custom: dict[str, Any] = Field(default_factory=dict)
    settings: CallSettings = Field(default_factory=CallSettings)
    team: str | None = None
    starts_at: Timestamp | None = None
    ended_at: Timestamp | None = None
    current_session_id: str | None = None
    session: CallSession | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None

    @property
    def live_session(self) -> CallSession | None:
        """The session in progress, if any (``current_session_id`` set and not ended)."""
        session = self.session
        if session is None or not session.live or not self.current_session_id:
            return None
        return session if session.id == self.current_session_id else None


class CallResponse(Model):
    """The answer of get, get-or-create, update: the call, its members and what I may do."""

    call: CallInfo
    members: list[Member] = Field(default_factory=list)
    membership: Member | None = None
    own_capabilities: Annotated[list[str], BeforeValidator(_capability_names)] = Field(
        default_factory=list
    )
    created: bool | None = None

    @property
    def cid(self) -> str:
        return self.call.cid


class IceServer(Model):
    urls: list[str] = Field(default_factory=list)
    username: str | None = None
    credential: str | None = Field(
        default=None, validation_alias=AliasChoices("credential", "password")
    )


class JoinResponse(CallResponse):
    """The answer of join: ``session_id`` is my participant session id (signaling address)."""

    session_id: str = Field(validation_alias=AliasChoices("session_id", "user_session_id"))
    participants: list[Participant] = Field(default_factory=list)
    ice_servers: list[IceServer] = Field(default_factory=list)


class MembersPage(Model):
    members: list[Member] = Field(default_factory=list)
    next: str | None = None
    prev: str | None = None


class CallsPage(Model):
    calls: list[CallResponse] = Field(default_factory=list)
    next: str | None = None
    prev: str | None = None
