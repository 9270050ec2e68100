"""The daemon's vocabulary: call state and server link (kept apart: a call keeps its
peer-to-peer media while the server is away, docs/architecture.md), the normalized events the
state machine consumes, the small ports it drives (server link, media, sounds, panel) and the one
it offers (:class:`Machine`, what modes, server events, buttons and the unlock may do with it).
The real adapters live in :mod:`appliance.daemon.link` and :mod:`appliance.daemon.medialink`;
tests hand in fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from appliance.clock import Clock
from appliance.daemon.config import CallConfig, DeviceConfig
from appliance.daemon.indications import Indications
from appliance.hardware.relay import UnlockResult


class CallState(StrEnum):
    IDLE = "idle"
    CALLING = "calling"
    RINGING = "ringing"
    CONNECTING = "connecting"
    IN_CALL = "in_call"
    ENDING = "ending"


class LinkState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True)
class LinkEvent:
    """A server event reduced to what the state machine reads. ``type`` is the server's event
    type, or ``link.online`` / ``link.offline`` for the connection itself."""

    type: str
    call_cid: str | None = None
    user_id: str | None = None
    reason: str | None = None
    custom: dict[str, Any] | None = None
    session_id: str | None = None
    participant_session: str | None = None
    resynced: bool = False


@dataclass
class Joined:
    """What a join returned: my participant session id and who was already there."""

    cid: str
    session_id: str
    participants: dict[str, str] = field(default_factory=dict)  # participant session → user id
    handle: Any = None  # the client's Call object, for the media engine


@dataclass(frozen=True)
class MediaEvent:
    kind: str  # peer_connected | peer_failed | peer_left | first_packet
    peer: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


class Link(Protocol):
    user_id: str

    async def start(self, on_event: Callable[[LinkEvent], None]) -> None: ...

    async def close(self) -> None: ...

    async def ring(self, call: CallConfig, call_id: str) -> str:
        """Get-or-create the call with ``ring=true``; returns its cid."""

    async def accept(self, cid: str) -> None: ...

    async def reject(self, cid: str, reason: str) -> None: ...

    async def send_event(self, cid: str, custom: dict[str, Any]) -> None: ...

    async def member_role(self, cid: str, user_id: str) -> str | None: ...

    async def participant_sessions(self, cid: str) -> set[str] | None:
        """Participant session ids of the live session; ``None`` if no session is live."""

    async def upcoming(self, within_s: float) -> list[tuple[str, float]]:
        """Calls I am a member of that start within ``within_s`` (or started and did not end):
        ``(cid, starts_at as epoch seconds)``."""


class Media(Protocol):
    """One call's media (the daemon's view of :class:`appliance.media.session.CallMedia`): it
    joins the call (the participant is bound to the media's signaling) and leaves on stop."""

    async def start(self) -> Joined: ...

    def open_gate(self) -> None: ...

    def close_gate(self) -> None:
        """Nothing more leaves the device (hanging up)."""

    def set_muted(self, muted: bool) -> None: ...

    async def quiet(self) -> None:
        """Return once nothing let through before the last close or mute is still being sent
        (bounded): from then on the LEDs may say that nothing leaves."""

    async def stop(self) -> None:
        """Close every peer and leave the call (idempotent)."""

    def stats(self) -> dict[str, Any]: ...


MediaFactory = Callable[[str, bool, Callable[[MediaEvent], None]], Media]
"""``factory(cid, create, on_event)``: media for one join of ``cid``."""


class Sounds(Protocol):
    def play(self, name: str, *, loop: bool = False) -> None: ...

    async def play_once(self, name: str) -> None:
        """Play to the end (the pre-announce chime before an auto-answer)."""

    def stop(self) -> None: ...


class PanelPort(Protocol):
    def show(self, state: str) -> None: ...

    def camera_live(self, on: bool) -> None: ...

    def unlock(self, by: str | None) -> UnlockResult: ...

    def snapshot(self) -> dict[str, Any]: ...


class Machine(Protocol):
    """The state machine as the modules layered on it see it (:class:`appliance.daemon.machine.
    Daemon` implements it): they read its state and call its verbs; the call state changes only
    in :meth:`transition`, which the verbs call."""

    cfg: DeviceConfig
    me: str
    clock: Clock
    link: Link
    panel: PanelPort
    sounds: Sounds
    unlocks: list[dict[str, Any]]
    indications: Indications

    @property
    def call_state(self) -> CallState: ...

    @property
    def link_state(self) -> LinkState: ...

    @property
    def cid(self) -> str | None: ...

    @property
    def caller(self) -> str | None: ...

    @property
    def joined(self) -> Joined | None: ...

    @property
    def media(self) -> Media | None: ...

    @property
    def muted(self) -> bool: ...

    def transition(self, new: CallState, reason: str) -> None: ...

    def refresh_leds(self) -> None: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task of the daemon's; its errors are reported, not raised."""

    def call_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task owned by the current call: cancelled when the call returns to idle."""

    async def wait_idle(self) -> None: ...

    def video_leaves(self) -> bool:
        """Whether video leaves the device when the media gate is open."""

    def ring_in(self, cid: str, caller: str | None) -> None:
        """An incoming ring while idle: ringing (and auto-answer, if the mode says so)."""

    def accepted_by(self, user_id: str | None) -> None:
        """Someone answered the call I placed: join once they are in the session."""

    def participant_arrived(self, user_id: str) -> None: ...

    def set_link_state(self, state: LinkState) -> None: ...

    def place_call(self) -> None: ...

    def answer(self, *, auto: bool) -> None: ...

    async def reject(self, reason: str) -> None: ...

    async def join(self, cid: str, *, create: bool, stay: bool = False) -> None: ...

    def join_now(self) -> None:
        """Join the configured call now (auto_join: cuts a rejoin backoff short)."""

    async def hang_up(self, reason: str) -> None: ...

    async def tear_down(self) -> None:
        """Stop the media, leave the call and return to idle (no reject sent)."""

    def end_locally(self, reason: str) -> None: ...

    def set_muted(self, muted: bool, source: str) -> None: ...
