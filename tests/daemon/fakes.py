"""Fakes for the state machine's ports: a scripted server link, media and sounds that record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from appliance.daemon.config import CallConfig
from appliance.daemon.ports import Joined, LinkEvent, MediaEvent
from appliance.errors import ServerUnavailable


class FakeLink:
    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.calls: list[tuple[Any, ...]] = []
        self.roles: dict[str, str] = {}
        self.participants: dict[str, str] = {}  # session → user, returned by join
        self.sessions_alive: set[str] | None = set()
        self.fail_join = 0
        self.appointments: list[tuple[str, float]] = []
        self.on_event: Callable[[LinkEvent], None] | None = None
        self._n = 0

    async def start(self, on_event: Callable[[LinkEvent], None]) -> None:
        self.on_event = on_event
        on_event(LinkEvent("link.online"))

    def emit(self, type: str, cid: str | None = None, **kw: Any) -> None:
        assert self.on_event is not None
        self.on_event(LinkEvent(type, call_cid=cid, **kw))

    async def close(self) -> None:
        self.calls.append(("close",))

    async def ring(self, call: CallConfig, call_id: str) -> str:
        self.calls.append(("ring", call_id))
        return f"{call.type}:{call_id or 'fresh'}"

    async def accept(self, cid: str) -> None:
        self.calls.append(("accept", cid))

    async def reject(self, cid: str, reason: str) -> None:
        self.calls.append(("reject", cid, reason))

    async def join(self, cid: str, *, create: bool) -> Joined:
        self.calls.append(("join", cid, create))
        if self.fail_join:
            self.fail_join -= 1
            raise ServerUnavailable("server down", cid=cid)
        self._n += 1
        me = f"{self.user_id}-s{self._n}"
        return Joined(cid, me, {me: self.user_id, **self.participants})

    async def leave(self, cid: str) -> None:
        self.calls.append(("leave", cid))

    async def send_event(self, cid: str, custom: dict[str, Any]) -> None:
        self.calls.append(("event", cid, custom))

    async def member_role(self, cid: str, user_id: str) -> str | None:
        return self.roles.get(user_id)

    async def participant_sessions(self, cid: str) -> set[str] | None:
        return self.sessions_alive

    async def upcoming(self, within_s: float) -> list[tuple[str, float]]:
        self.calls.append(("upcoming", within_s))
        return list(self.appointments)

    def verbs(self) -> list[str]:
        """The calls made, without the periodic appointment look-ups."""
        return [c[0] for c in self.calls if c[0] != "upcoming"]


class FakeMedia:
    """Joins through the fake link's script (as CallMedia joins through the client)."""

    def __init__(
        self,
        link: FakeLink,
        cid: str,
        create: bool,
        on_event: Callable[[MediaEvent], None],
        log: list[str],
    ) -> None:
        self.link = link
        self.cid = cid
        self.create = create
        self.on_event = on_event
        self.log = log
        self.muted = False
        self.joined: Joined | None = None
        self.drained = asyncio.Event()  # clear it to keep a frame "on its way out"
        self.drained.set()
        self.on_set_muted: Callable[[bool], None] | None = None

    async def start(self) -> Joined:
        self.log.append("start")
        self.joined = await self.link.join(self.cid, create=self.create)
        return self.joined

    def open_gate(self) -> None:
        self.log.append("gate")

    def close_gate(self) -> None:
        self.log.append("gate closed")

    def set_muted(self, muted: bool) -> None:
        if self.on_set_muted is not None:
            self.on_set_muted(muted)
        self.muted = muted
        self.log.append(f"muted={muted}")

    async def quiet(self) -> None:
        self.log.append("quiet")
        async with asyncio.timeout(5):  # bounded, as the real one
            await self.drained.wait()

    async def stop(self) -> None:
        self.log.append("stop")
        if self.joined is not None:
            await self.link.leave(self.cid)

    def stats(self) -> dict[str, Any]:
        return {"frames_captured": 1}


class FakeSounds:
    def __init__(self) -> None:
        self.log: list[str] = []
        self.playing: str | None = None
        self.finished = asyncio.Event()  # clear it to keep a play_once() sound playing
        self.finished.set()

    def play(self, name: str, *, loop: bool = False) -> None:
        self.log.append(name)
        self.playing = name

    async def play_once(self, name: str) -> None:
        self.log.append(name)
        await asyncio.sleep(0)
        await self.finished.wait()

    def stop(self) -> None:
        self.playing = None
