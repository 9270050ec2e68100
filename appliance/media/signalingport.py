"""The seam between media and the call server: join, leave, send a signal, hear signals.

:class:`Signaling` is all :class:`~appliance.media.session.CallMedia` needs. The media engine
knows no client: :class:`appliance.daemon.callsignaling.CallSignaling` adapts the client's
``Call`` (its one shared WebSocket) to this port; tests can use any other implementation, e.g.
an in-memory one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiortc import RTCIceServer


@dataclass(frozen=True)
class JoinInfo:
    session_id: str
    """My participant session id: what others address signals to."""
    participants: list[str]
    """Participant session ids already in the session (not me): I offer to each."""
    ice_servers: list[RTCIceServer] = field(default_factory=list)


@dataclass(frozen=True)
class SignalingEvent:
    kind: str
    """``signal`` | ``joined`` | ``left`` | ``ended``."""
    sender: str | None = None
    """The participant session id it is about (``from`` of a signal)."""
    signal: dict[str, Any] | None = None


SignalingListener = Callable[[SignalingEvent], None]


class Signaling(Protocol):
    async def join(self) -> JoinInfo: ...

    async def leave(self) -> None: ...

    async def send(self, to: str, signal: dict[str, Any]) -> None: ...

    def listen(self, listener: SignalingListener) -> Callable[[], None]:
        """Register ``listener`` (called on the loop); returns the function that removes it."""
        ...
