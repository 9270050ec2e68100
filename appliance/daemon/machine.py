"""The appliance state machine (docs/architecture.md, "The daemon").

The call state (idle, calling, ringing, connecting, in_call, ending) and the server link
(online, offline) are separate: a call keeps its peer-to-peer media when the server goes away.
:meth:`Daemon.transition` is the only place the call state changes; it logs ``old -> new`` and
the side effects (LEDs, sounds, timers, media teardown) hang off it. Inputs are button actions
(:mod:`appliance.daemon.actions`), server events (:class:`LinkEvent`, handled in
:mod:`appliance.daemon.serverevents`) and media events; every API call runs as a task owned by
the current call (:mod:`appliance.daemon.tasks`), so a hang-up cancels whatever that call still
had in flight. Modes (auto-answer, auto_join, appointments) live in :mod:`appliance.daemon.modes`,
the unlock in :mod:`appliance.daemon.unlock`, the audit trail in :mod:`appliance.daemon.audit`;
they all drive the machine through :class:`appliance.daemon.ports.Machine`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from appliance.clock import Clock
from appliance.daemon import actions, serverevents
from appliance.daemon.arrivals import Arrivals
from appliance.daemon.audit import audit
from appliance.daemon.config import DeviceConfig, Mode
from appliance.daemon.indications import Indications
from appliance.daemon.modes import ModeRunner
from appliance.daemon.ports import (
    CallState,
    Joined,
    Link,
    LinkEvent,
    LinkState,
    Media,
    MediaEvent,
    MediaFactory,
    PanelPort,
    Sounds,
)
from appliance.daemon.privacy import Privacy
from appliance.daemon.status import led_state, status
from appliance.daemon.tasks import DaemonTasks
from appliance.errors import APIError
from appliance.hardware.buttons import ButtonEvent

log = logging.getLogger(__name__)

IDLE, CALLING, RINGING = CallState.IDLE, CallState.CALLING, CallState.RINGING
CONNECTING, IN_CALL, ENDING = CallState.CONNECTING, CallState.IN_CALL, CallState.ENDING


class Daemon:
    def __init__(
        self,
        cfg: DeviceConfig,
        link: Link,
        media_factory: MediaFactory,
        panel: PanelPort,
        sounds: Sounds,
        clock: Clock,
    ) -> None:
        self.cfg = cfg
        self.link = link
        self._media_factory = media_factory
        self.panel = panel
        self.sounds = sounds
        self.clock = clock
        self.me = cfg.device.id
        self.call_state: CallState = IDLE
        self.link_state = LinkState.OFFLINE
        self.cid: str | None = None
        self.caller: str | None = None
        self.joined: Joined | None = None
        self.media: Media | None = None
        self.gate_open = False
        self.transitions: list[tuple[float, str, str, str]] = []
        self.unlocks: list[dict[str, Any]] = []
        self.first_packet_at: float | None = None
        self.audio_stats: Callable[[], dict[str, Any]] | None = None
        self._since = clock.monotonic()
        self._tasks = DaemonTasks(f"Daemon({self.me})", lambda: self.call_state.value, self._fail)
        self.indications = Indications(clock, cfg.timings.missed_s, self.refresh_leds, self.spawn)
        self._idle_event = asyncio.Event()
        self._arrivals = Arrivals(clock)
        self._ever_online = asyncio.Event()
        self.privacy = Privacy(self)
        self.modes = ModeRunner(self)

    @property
    def muted(self) -> bool:
        return self.privacy.muted

    @property
    def last_error(self) -> str | None:
        return self.indications.error

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.refresh_leds()
        await self.link.start(self.on_link_event)
        self.modes.start()

    async def wait_online(self) -> None:
        await self._ever_online.wait()

    async def stop(self) -> None:
        self.modes.stop()
        self._tasks.cancel_all()
        if self.call_state is not IDLE:
            await self._teardown(leave=True, reject=self.call_state in (CALLING, RINGING))
        self.sounds.stop()
        self.panel.camera_live(False)
        await self.link.close()

    def healthy(self) -> bool:
        """For the watchdog: the loop runs (we are called) and no state is stuck."""
        stuck_after = self.cfg.timings.connect_timeout_s + 30
        if self.call_state is ENDING and self.clock.monotonic() - self._since > stuck_after:
            return False
        return True

    # ----------------------------------------------------------------------------- the transition

    def transition(self, new: CallState, reason: str) -> None:
        old = self.call_state
        if old is new:
            return
        self.call_state = new
        self._since = self.clock.monotonic()
        self.transitions.append((self.clock.time(), old.value, new.value, reason))
        log.info("Daemon(%s) %s -> %s (%s, %s)", self.me, old.value, new.value, reason, self.cid)
        if new is CALLING:
            self.sounds.play("ringback", loop=True)
            self.call_task(self._timeout(self.cfg.timings.ring_timeout_s, CALLING))
        elif new is RINGING:
            self.sounds.play("chime", loop=True)
            self.call_task(self._timeout(self.cfg.timings.ring_timeout_s, RINGING))
        elif new is CONNECTING:
            self.sounds.stop()
            self.call_task(self._timeout(self.cfg.timings.connect_timeout_s, CONNECTING))
        elif new is IN_CALL:
            self.sounds.stop()
        elif new is ENDING:
            # The camera-live LED goes off in _teardown, once the media is quiet.
            self.sounds.stop()
        elif new is IDLE:
            self.sounds.stop()
            self.panel.camera_live(False)
            self._tasks.cancel_call_tasks()
            self.cid = self.caller = None
            self.joined = None
            self._arrivals.clear()
            self._idle_event.set()
        if new is not IDLE:
            self._idle_event.clear()
        self.refresh_leds()

    def refresh_leds(self) -> None:
        self.panel.show(led_state(self, muted_shown=self.privacy.shown))

    # ----------------------------------------------------------------------------- tasks, errors, timers

    def call_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task owned by the current call: cancelled when the call returns to idle."""
        return self._tasks.call_task(coro)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    def _fail(self, message: str) -> None:
        log.warning("Daemon(%s) %s failed: %s", self.me, self.cid or "-", message)
        self.indications.failed(message)
        if self.call_state is not IDLE:
            self.spawn(self._teardown(leave=True, reject=False))
        else:
            self.refresh_leds()

    async def _timeout(self, seconds: float, state: CallState) -> None:
        await self.clock.sleep(seconds)
        if self.call_state is not state:
            return
        log.info("Daemon(%s) %s timed out after %.0fs", self.me, state.value, seconds)
        if state is CALLING:
            self.indications.missed()
            await self._teardown(leave=False, reject=True, reason="cancel")
        elif state is RINGING:
            self.indications.missed()
            self.transition(IDLE, "ring timeout")
        else:
            await self._teardown(leave=True, reject=False)

    async def wait_idle(self) -> None:
        await self._idle_event.wait()

    # ----------------------------------------------------------------------------- inputs

    def on_button(self, event: ButtonEvent) -> None:
        actions.act(self, event.action, source=f"button {event.button} {event.kind}")

    def on_link_event(self, event: LinkEvent) -> None:
        serverevents.handle(self, event)

    def on_media_event(self, event: MediaEvent) -> None:
        log.info("Daemon(%s) media %s %s", self.me, event.kind, event.peer or "")
        if event.kind == "peer_connected" and self.call_state is CONNECTING:
            self.transition(IN_CALL, "media connected")
        elif event.kind == "first_packet" and self.first_packet_at is None:
            self.first_packet_at = self.clock.time()

    def set_link_state(self, state: LinkState) -> None:
        self.link_state = state
        if state is LinkState.ONLINE:
            self._ever_online.set()
            self.modes.on_reconnect()
        self.refresh_leds()

    def ring_in(self, cid: str, caller: str | None) -> None:
        self.cid, self.caller = cid, caller
        audit("ring", cid, caller, "incoming ring")
        self.transition(RINGING, f"rung by {caller}")
        self.modes.maybe_auto_answer()

    def accepted_by(self, user_id: str | None) -> None:
        self.transition(CONNECTING, f"accepted by {user_id}")
        self.call_task(self._join_after(self.cid or "", user_id))

    def participant_arrived(self, user_id: str) -> None:
        self._arrivals.add(user_id)

    # ----------------------------------------------------------------------------- verbs

    def place_call(self) -> None:
        call_id = self.cfg.call_id
        self.cid = f"{self.cfg.call.type}:{call_id}" if call_id else None
        self.transition(CALLING, "call pressed")
        self.call_task(self._ring(call_id))

    async def _ring(self, call_id: str) -> None:
        cid = await self.link.ring(self.cfg.call, call_id)
        self.cid = cid
        rang = self.cfg.call.ring or [m.user_id for m in self.cfg.call.members]
        audit("ring", cid, self.me, f"rang {', '.join(rang)}")

    def answer(self, *, auto: bool) -> None:
        assert self.cid is not None
        audit("auto-answer" if auto else "answer", self.cid, self.caller, "answered")
        self.transition(CONNECTING, "auto-answer" if auto else "answer pressed")
        self.call_task(self._accept_and_join(self.cid))

    async def _join_after(self, cid: str, accepter: str | None) -> None:
        """Join once the accepter is in the session (it joins right after accepting): two
        participants joining at the same instant would both see the other and both offer."""
        await self._arrivals.wait_for(accepter, self.cfg.timings.accept_join_wait_s)
        await self.join(cid, create=False)

    async def _accept_and_join(self, cid: str) -> None:
        await self.link.accept(cid)
        await self.join(cid, create=False)

    async def reject(self, reason: str) -> None:
        cid = self.cid
        if cid is None:
            return
        audit("reject", cid, self.caller, f"rejected ({reason})")
        self.transition(IDLE, f"rejected ({reason})")
        await self.link.reject(cid, reason)

    async def join(self, cid: str, *, create: bool, stay: bool = False) -> None:
        """Join ``cid``, start media with the gate closed, light the camera-live LED, then open
        the gate: nothing leaves the device before the LED says so."""
        self.cid = cid
        if self.call_state is not CONNECTING:
            self.transition(CONNECTING, "joining")
        media = self._media_factory(cid, create, self.on_media_event)
        self.media = media
        self.first_packet_at = None
        self.privacy.joining(media)
        joined = await media.start()
        self.joined = joined
        self.panel.camera_live(self.video_leaves())
        self.gate_open = True
        media.open_gate()
        others = {s: u for s, u in joined.participants.items() if s != joined.session_id}
        if stay or self.cfg.mode is Mode.AUTO_JOIN:
            self.transition(IN_CALL, "joined")
        elif not others and self.call_state is CONNECTING:
            log.info("Daemon(%s) joined %s, waiting for the other side", self.me, cid)

    def join_now(self) -> None:
        self.modes.join_now()

    def video_leaves(self) -> bool:
        return self.privacy.video_leaves()

    async def hang_up(self, reason: str) -> None:
        if self.call_state is CALLING:
            await self._teardown(leave=False, reject=True, reason="cancel")
        else:
            await self._teardown(leave=True, reject=False)
        log.info("Daemon(%s) hung up (%s)", self.me, reason)

    async def tear_down(self) -> None:
        await self._teardown(leave=True, reject=False)

    async def _teardown(self, *, leave: bool, reject: bool, reason: str = "cancel") -> None:
        """``leave`` is informational: stopping the media leaves the call when it joined."""
        cid, media = self.cid, self.media
        self.transition(ENDING, "hanging up")
        self.media = None
        self.gate_open = False
        try:
            if media is not None:
                try:
                    media.close_gate()
                    await media.quiet()
                finally:
                    # Off once nothing can leave any more (not while a frame is on its way).
                    self.panel.camera_live(False)
                    await media.stop()  # closes the peers and leaves the call
            if cid is not None and reject:
                await self.link.reject(cid, reason)
        except (APIError, OSError) as err:
            log.warning("Daemon(%s) %s: could not tell the server: %s", self.me, cid, err)
        finally:
            self.transition(IDLE, "hung up")

    def end_locally(self, reason: str) -> None:
        """The server ended the call or the other side left: tear down our side."""
        if self.call_state is IDLE:
            return
        log.info("Daemon(%s) %s ended: %s", self.me, self.cid, reason)
        leave = reason != "call.ended"
        self.spawn(self._teardown(leave=leave, reject=False))

    def set_muted(self, muted: bool, source: str) -> None:
        self.privacy.set(muted, source)

    def status(self) -> dict[str, Any]:
        return status(self)

    def __repr__(self) -> str:
        return f"<Daemon {self.me} {self.call_state.value} {self.link_state.value} {self.cid}>"
