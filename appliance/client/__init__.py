"""The call API in async Python (README.md, "Python client"): ``Client(...).call("default", "123")``.

One :class:`Client` holds one ``httpx.AsyncClient`` and one WebSocket, shared by every consumer
in the process (the daemon's state machine and the media engine): typed events by subscription,
signaling, heartbeats, reconnect with jittered backoff forever, and a resync after each reconnect.

Names are imported lazily: ``appliance.client.cli`` (loaded to build every ``appliance``
command's parser) must not pay for httpx, websockets and pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.lazyexports import lazy_exports

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


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY, __all__)
