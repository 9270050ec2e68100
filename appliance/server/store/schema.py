"""Database schema (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Timestamps are integer nanoseconds since the epoch (what the API returns). JSON columns hold
``custom`` data; custom fields that can be filtered on are also written, flattened, into the
``*_custom_index`` side tables so that a filter on a rare value is an index lookup at 100,000
members, on both databases, without database-specific JSON operators.

Timers are not in memory: ring deadlines, per-callee deadlines, grace periods and
``max_duration`` ends are columns here, so a restart keeps them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# Schema version; migrations in appliance/server/store/migrations.py move a database forward.
SCHEMA_VERSION = 4

schema_info = Table(
    "schema_info",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

# Persisted settings of the server itself (e.g. a generated secret lives in a file, not here).

users = Table(
    "users",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("name", String(255), nullable=True),
    Column("image", Text, nullable=True),
    Column("role", String(64), nullable=False, default="user"),
    Column("teams", JSON, nullable=False, default=list),
    Column("custom", JSON, nullable=False, default=dict),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("last_active", BigInteger, nullable=True),
    # Tokens issued (iat) before this instant are refused.
    Column("revoke_tokens_issued_before", BigInteger, nullable=True),
)

user_custom_index = Table(
    "user_custom_index",
    metadata,
    Column("user_id", String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("path", String(255), nullable=False),
    Column("value_text", String(512), nullable=True),
    Column("value_num", Float, nullable=True),
    Index("ix_user_custom_text", "path", "value_text"),
    Index("ix_user_custom_num", "path", "value_num"),
    Index("ix_user_custom_user", "user_id"),
)

call_types = Table(
    "call_types",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("settings", JSON, nullable=False),
    Column("grants", JSON, nullable=False),
    Column("notification_settings", JSON, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

calls = Table(
    "calls",
    metadata,
    Column("cid", String(320), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("id", String(255), nullable=False),
    Column("created_by_id", String(255), nullable=False),
    Column("team", String(255), nullable=True),
    Column("custom", JSON, nullable=False, default=dict),
    Column("settings_override", JSON, nullable=False, default=dict),
    Column("starts_at", BigInteger, nullable=True),
    Column("ended_at", BigInteger, nullable=True),
    Column("current_session_id", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_calls_created_by", "created_by_id"),
    Index("ix_calls_team", "team"),
    Index("ix_calls_created_at", "created_at", "cid"),
    Index("ix_calls_starts_at", "starts_at"),
    Index("ix_calls_ended_at", "ended_at"),
)

call_members = Table(
    "call_members",
    metadata,
    Column("call_cid", String(320), ForeignKey("calls.cid", ondelete="CASCADE"), nullable=False),
    Column("user_id", String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("role", String(64), nullable=False, default="call_member"),
    Column("custom", JSON, nullable=False, default=dict),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ux_call_members", "call_cid", "user_id", unique=True),
    Index("ix_call_members_created", "call_cid", "created_at", "user_id"),
    Index("ix_call_members_role", "call_cid", "role", "user_id"),
    Index("ix_call_members_updated", "call_cid", "updated_at", "user_id"),
    Index("ix_call_members_user", "user_id"),
)

call_member_custom_index = Table(
    "call_member_custom_index",
    metadata,
    Column("call_cid", String(320), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("path", String(255), nullable=False),
    Column("value_text", String(512), nullable=True),
    Column("value_num", Float, nullable=True),
    Index("ix_member_custom_text", "call_cid", "path", "value_text", "user_id"),
    Index("ix_member_custom_num", "call_cid", "path", "value_num", "user_id"),
    Index("ix_member_custom_member", "call_cid", "user_id"),
)

# One row per session of a call: a call id lives forever, each ring or join on a call with no
# live session starts a new one. Ended sessions are the history (who rang, answered, missed).
call_sessions = Table(
    "call_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("call_cid", String(320), ForeignKey("calls.cid", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("started_at", BigInteger, nullable=True),  # first participant joined
    Column("ended_at", BigInteger, nullable=True),
    Column("end_reason", String(64), nullable=True),
    # Ring attempt: the caller and the deadline after which nobody-accepted ends the session.
    Column("rung_by_id", String(255), nullable=True),
    Column("ring_started_at", BigInteger, nullable=True),
    Column("ring_video", Boolean, nullable=True),
    Column("auto_cancel_at", BigInteger, nullable=True),
    Column("max_duration_at", BigInteger, nullable=True),
    Index("ix_sessions_call", "call_cid", "created_at"),
    Index("ix_sessions_auto_cancel", "auto_cancel_at"),
    Index("ix_sessions_max_duration", "max_duration_at"),
)

# Who was rung in a session and what became of it: ringing | accepted | rejected | missed |
# cancelled. ``deadline`` is the per-callee incoming_call_timeout.
session_ring = Table(
    "session_ring",
    metadata,
    Column(
        "session_id", String(64), ForeignKey("call_sessions.id", ondelete="CASCADE"), nullable=False
    ),
    Column("user_id", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("deadline", BigInteger, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    Index("ux_session_ring", "session_id", "user_id", unique=True),
    Index("ix_session_ring_deadline", "state", "deadline"),
    Index("ix_session_ring_user", "user_id", "state"),
)

# Participants of a session. ``id`` is the participant session id used in signaling.
participants = Table(
    "participants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "session_id", String(64), ForeignKey("call_sessions.id", ondelete="CASCADE"), nullable=False
    ),
    Column("call_cid", String(320), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("connection_id", String(64), nullable=True),
    Column("role", String(64), nullable=True),
    Column("joined_at", BigInteger, nullable=False),
    Column("left_at", BigInteger, nullable=True),
    # Set when the participant's WebSocket dropped; it counts as gone at this deadline.
    Column("gone_at", BigInteger, nullable=True),
    Index("ix_participants_session", "session_id", "left_at"),
    Index("ix_participants_call", "call_cid", "left_at"),
    Index("ix_participants_conn", "connection_id"),
    Index("ix_participants_gone", "gone_at"),
)

# --- Web Push (version 2) -------------------------------------------------------------------

# Key pairs the server makes once per database and every replica shares: ``vapid`` (RFC 8292,
# P-256) signs the Web Push requests. The first replica to start inserts; the others read.
server_keys = Table(
    "server_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("private_key", Text, nullable=False),  # PKCS#8 PEM
    Column("public_key", String(128), nullable=False),  # base64url, uncompressed point
    Column("created_at", BigInteger, nullable=False),
)

# Push subscriptions in Stream's device shape: ``id`` is the push endpoint URL. A POST of the
# same endpoint updates it (moving it to the posting user); ``updated_at`` is the last POST,
# what a token revocation compares against.
push_devices = Table(
    "push_devices",
    metadata,
    Column("id", String(2048), primary_key=True),
    Column("user_id", String(255), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("push_provider", String(32), nullable=False),
    Column("p256dh", String(128), nullable=False),
    Column("auth", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Index("ix_push_devices_user", "user_id", "updated_at"),
)

# One row per push decided: the replica whose insert succeeds sends it (the others' insert
# finds the row and skips). ``ring_at`` is the ring attempt's start (a call rings again later
# in the same session); ``kind`` is ``ring`` or ``stopped``. Rows older than a day are deleted.
push_claims = Table(
    "push_claims",
    metadata,
    Column("session_id", String(64), nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("ring_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ux_push_claims", "session_id", "user_id", "kind", "ring_at", unique=True),
    Index("ix_push_claims_created", "created_at"),
)

# One row per webhook delivery (``webhooks.py``): the replica whose insert succeeds posts it.
# ``id`` is the delivery id sent as ``X-Webhook-Id``. Rows older than a day are deleted.
webhook_claims = Table(
    "webhook_claims",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_webhook_claims_created", "created_at"),
)
