"""The built-in call types: ``default``, ``audio_room``, ``livestream``, ``development``.

Grants map a role to the capabilities it has on calls of the type. The ``user`` role is any
signed-in user who is not a member of the call; ``call_member`` is the default member role.
"Only members can join" is a type whose ``user`` role lacks ``join-call``. ``ring-call`` (ring
the members, also by creating or joining with ``ring``) goes to members of ``default`` and to
hosts, moderators and admins everywhere; a non-member rings only on ``development``.
``join-ongoing-call`` (join as the third or later user of a session) goes on the built-ins to
every role that has ``join-call``, as on Stream; a type that keeps a conversation between two
(``intercom`` in ``config/call-types.yaml``) leaves it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from appliance.calls.capabilities import Capability as C
from appliance.calls.settings import CallSettings

_MEDIA = [C.SEND_AUDIO, C.SEND_VIDEO, C.SCREENSHARE, C.CREATE_REACTION]
_MODERATE = [
    C.READ_CALL,
    C.JOIN_CALL,
    C.JOIN_ONGOING_CALL,
    C.JOIN_BACKSTAGE,
    C.JOIN_ENDED_CALL,
    C.UPDATE_CALL,
    C.UPDATE_CALL_SETTINGS,
    C.UPDATE_CALL_MEMBER,
    C.UPDATE_CALL_PERMISSIONS,
    C.REMOVE_CALL_MEMBER,
    C.RING_CALL,
    C.END_CALL,
    C.MUTE_USERS,
    C.BLOCK_USERS,
    C.KICK_USER,
    C.PIN_FOR_EVERYONE,
    C.CHANGE_MAX_DURATION,
    C.CREATE_CALL,
    *_MEDIA,
]


def _names(caps: list[C]) -> list[str]:
    return sorted({c.value for c in caps})


@dataclass(frozen=True)
class CallType:
    name: str
    settings: dict[str, Any]
    grants: dict[str, list[str]]
    notification_settings: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"CallType({self.name})"


def _settings(**blocks: dict[str, Any]) -> dict[str, Any]:
    return CallSettings.model_validate(blocks).stored()


def _grants(user: list[C], member: list[C]) -> dict[str, list[str]]:
    return {
        "user": _names(user),
        "call_member": _names(member),
        "host": _names(_MODERATE),
        "moderator": _names(_MODERATE),
        "admin": _names(_MODERATE),
    }


def notification_settings() -> dict[str, Any]:
    """``NotificationSettings`` as the SDK parses it; push notifications are not offered."""
    off = {"enabled": False, "apns": {"title": "", "body": ""}, "fcm": {}}
    return {
        "enabled": False,
        "call_live_started": off,
        "call_missed": off,
        "call_notification": off,
        "call_ring": off,
        "session_started": off,
    }


_JOIN = [C.JOIN_CALL, C.JOIN_ONGOING_CALL]
_CALLER = [C.CREATE_CALL, C.READ_CALL, *_JOIN, C.RING_CALL, C.UPDATE_CALL, C.END_CALL, *_MEDIA]

BUILTIN_CALL_TYPES: dict[str, CallType] = {
    t.name: t
    for t in (
        CallType(
            "default",
            _settings(),
            _grants(
                user=[C.CREATE_CALL, C.READ_CALL, *_JOIN, *_MEDIA],
                member=[*_CALLER, C.UPDATE_CALL_MEMBER],
            ),
        ),
        CallType(
            "audio_room",
            _settings(
                video={"enabled": False, "camera_default_on": False},
                backstage={"enabled": True},
                audio={"default_device": "speaker", "mic_default_on": False},
            ),
            _grants(
                user=[C.CREATE_CALL, C.READ_CALL, *_JOIN],
                member=[C.READ_CALL, *_JOIN, C.SEND_AUDIO, C.CREATE_REACTION],
            ),
        ),
        CallType(
            "livestream",
            _settings(backstage={"enabled": True}, audio={"mic_default_on": False}),
            _grants(
                user=[C.READ_CALL, *_JOIN],
                member=[C.READ_CALL, *_JOIN, C.CREATE_REACTION],
            ),
        ),
        CallType(
            "development",
            _settings(),
            _grants(user=list(_MODERATE), member=list(_MODERATE)),
        ),
    )
}
