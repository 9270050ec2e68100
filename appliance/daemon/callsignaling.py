"""The client's ``Call`` as the media engine's :class:`~appliance.media.signalingport.Signaling`
port: join and leave through the REST API, signals and participant events over the client's one
WebSocket. It lives with the daemon (beside :mod:`appliance.daemon.medialink`, its user) so that
``media/`` imports no client (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCIceServer

from appliance.media.signalingport import JoinInfo, SignalingEvent, SignalingListener

if TYPE_CHECKING:
    from appliance.client.call import Call
    from appliance.client.events import Event

_EVENT_KINDS = {
    "call.signal": "signal",
    "call.session_participant_joined": "joined",
    "call.session_participant_left": "left",
    "call.ended": "ended",
    "call.session_ended": "ended",
}


class CallSignaling:
    """:class:`Signaling` over the client's ``Call`` and its one WebSocket."""

    def __init__(self, call: Call, **join_options: Any) -> None:
        self.call = call
        self._join_options = join_options
        self.session_id: str | None = None

    async def join(self) -> JoinInfo:
        response = await self.call.join(**self._join_options)
        self.session_id = response.session_id
        ice_servers = [
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in response.ice_servers
        ]
        participants = [
            p.session_id for p in response.participants if p.session_id != response.session_id
        ]
        return JoinInfo(response.session_id, participants, ice_servers)

    async def leave(self) -> None:
        await self.call.leave()

    async def send(self, to: str, signal: dict[str, Any]) -> None:
        await self.call.send_signal(to, signal)

    def listen(self, listener: SignalingListener) -> Callable[[], None]:
        cid = self.call.cid

        def on_event(event: Event) -> None:
            if event.cid not in (cid, None):
                return
            kind = _EVENT_KINDS.get(event.type)
            if kind == "signal":
                listener(SignalingEvent("signal", event.from_, event.signal or {}))
            elif kind in ("joined", "left"):
                participant = event.participant
                sender = participant.session_id if participant is not None else event.session_id
                listener(SignalingEvent(kind, sender))
            elif kind == "ended":
                listener(SignalingEvent("ended"))

        remove: Callable[[], None] = self.call.client.on(list(_EVENT_KINDS), on_event)
        return remove

    def __repr__(self) -> str:
        return f"CallSignaling({self.call.cid}, {self.session_id})"
