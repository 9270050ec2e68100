"""Capabilities (what a role may do on a call) and the roles this server knows.

The names are Stream Video's ``OwnCapability`` values, plus two of ours: ``ring-call`` (Stream
leaves ringing to its clients, this server decides it) and ``join-ongoing-call`` (join a session
in which two other users already talk, as the third or later; without it such a join is a 403,
so a door's conversation with one resident is not joined by another unasked). See
``calls/types.py`` for who has them. Capabilities of features this server does
not offer (recording, broadcasting, transcription, closed captions) are valid names in a call
type's grants, but no feature answers to them.
"""

from __future__ import annotations

from enum import StrEnum


class Capability(StrEnum):
    BLOCK_USERS = "block-users"
    CHANGE_MAX_DURATION = "change-max-duration"
    CREATE_CALL = "create-call"
    CREATE_REACTION = "create-reaction"
    ENABLE_NOISE_CANCELLATION = "enable-noise-cancellation"
    END_CALL = "end-call"
    JOIN_BACKSTAGE = "join-backstage"
    JOIN_CALL = "join-call"
    JOIN_ONGOING_CALL = "join-ongoing-call"
    JOIN_ENDED_CALL = "join-ended-call"
    KICK_USER = "kick-user"
    MUTE_USERS = "mute-users"
    PIN_FOR_EVERYONE = "pin-for-everyone"
    READ_CALL = "read-call"
    REMOVE_CALL_MEMBER = "remove-call-member"
    RING_CALL = "ring-call"
    SCREENSHARE = "screenshare"
    SEND_AUDIO = "send-audio"
    SEND_VIDEO = "send-video"
    UPDATE_CALL = "update-call"
    UPDATE_CALL_MEMBER = "update-call-member"
    UPDATE_CALL_PERMISSIONS = "update-call-permissions"
    UPDATE_CALL_SETTINGS = "update-call-settings"


NOT_OFFERED: frozenset[str] = frozenset(
    f"{verb}-{what}-call"
    for verb in ("start", "stop")
    for what in (
        "broadcast",
        "closed-captions",
        "frame-record",
        "individual-record",
        "raw-record",
        "record",
        "transcription",
    )
) | {"send-closed-captions-call"}

ALL_CAPABILITIES: frozenset[str] = frozenset(c.value for c in Capability) | NOT_OFFERED

# Global roles a user carries (``users.role``) and call roles a member carries.
USER_ROLES: frozenset[str] = frozenset({"user", "admin", "guest", "anonymous"})
CALL_ROLES: frozenset[str] = frozenset({"user", "call_member", "admin", "host", "moderator"})
ROLES: frozenset[str] = USER_ROLES | CALL_ROLES


def unknown_capabilities(names: list[str] | set[str] | frozenset[str]) -> list[str]:
    return sorted(n for n in names if n not in ALL_CAPABILITIES)
