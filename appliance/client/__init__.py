"""The call API in async Python (DESIGN §2, §4): ``Client(...).call("default", "123")``.

One :class:`Client` holds one ``httpx.AsyncClient`` and one WebSocket, shared by every consumer
in the process (the daemon's state machine and the media engine): typed events by subscription,
signaling, heartbeats, reconnect with jittered backoff forever, and a resync after each reconnect.

Names are imported lazily: ``appliance.client.cli`` (loaded to build every ``appliance``
command's parser) must not pay for httpx, websockets and pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "Backoff": "appliance.client.backoff",
    "Call": "appliance.client.call",
    "MemberRequest": "appliance.client.call",
    "Client": "appliance.client.client",
    "ClientConfig": "appliance.client.client",
    "Connection": "appliance.client.connection",
    "CONNECTION_LOST": "appliance.client.events",
    "CONNECTION_OK": "appliance.client.events",
    "Event": "appliance.client.events",
    "Subscription": "appliance.client.events",
    "CallInfo": "appliance.client.models",
    "CallResponse": "appliance.client.models",
    "CallSession": "appliance.client.models",
    "CallSettings": "appliance.client.models",
    "CallsPage": "appliance.client.models",
    "IceServer": "appliance.client.models",
    "JoinResponse": "appliance.client.models",
    "Member": "appliance.client.models",
    "MembersPage": "appliance.client.models",
    "Participant": "appliance.client.models",
    "User": "appliance.client.models",
}

__all__ = [
    "CONNECTION_LOST",
    "CONNECTION_OK",
    "Backoff",
    "Call",
    "CallInfo",
    "CallResponse",
    "CallSession",
    "CallSettings",
    "CallsPage",
    "Client",
    "ClientConfig",
    "Connection",
    "Event",
    "IceServer",
    "JoinResponse",
    "Member",
    "MemberRequest",
    "MembersPage",
    "Participant",
    "Subscription",
    "User",
]

if TYPE_CHECKING:
    from appliance.client.backoff import Backoff
    from appliance.client.call import Call, MemberRequest
    from appliance.client.client import Client, ClientConfig
    from appliance.client.connection import Connection
    from appliance.client.events import CONNECTION_LOST, CONNECTION_OK, Event, Subscription
    from appliance.client.models import (
        CallInfo,
        CallResponse,
        CallSession,
        CallSettings,
        CallsPage,
        IceServer,
        JoinResponse,
        Member,
        MembersPage,
        Participant,
        User,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
