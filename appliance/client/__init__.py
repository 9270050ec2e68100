"""The call API in async Python (DESIGN §2, §4): ``Client(...).call("default", "123")``.

One :class:`Client` holds one ``httpx.AsyncClient`` and one WebSocket, shared by every consumer
in the process (the daemon's state machine and the media engine): typed events by subscription,
signaling, heartbeats, reconnect with jittered backoff forever, and a resync after each reconnect.
"""

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
