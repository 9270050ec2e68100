"""The appliance state machine (DESIGN §7).

The call state (idle, calling, ringing, connecting, in_call, ending) and the server link
(online, offline) are separate: a call keeps its peer-to-peer media when the server goes away.
:meth:`Daemon.transition` is the only place the call state changes; it logs ``old -> new`` and
the side effects (LEDs, sounds, timers, media teardown) hang off it. Inputs are button actions,
server events (:class:`LinkEvent`, handled in :mod:`appliance.daemon.serverevents`) and media events;
every API call runs as a task owned by the current call, so a hang-up cancels whatever that call
still had in flight. Modes (auto-answer, auto_join, appointments) live in :mod:`appliance.daemon.modes`,
the unlock in :mod:`appliance.daemon.unlock`, the audit trail in :mod:`appliance.daemon.audit`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from appliance.clock import Clock
from appliance.daemon.audit import audit
from appliance.daemon.config import Action, DeviceConfig, Mode
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
from appliance.errors import APIError, ApplianceError
from appliance.hardware.buttons import ButtonEvent

log = logging.getLogger(__name__)

S = CallState


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
        self.call_state = S.IDLE
        self.link_state = LinkState.OFFLINE
        self.cid: str | None = None
        self.caller: str | None = None
        self.joined: Joined | None = None
        self.media: Media | None = None
        self.gate_open = False
        self.muted = False
        # What the LEDs say about PRIVACY: set once the media confirmed that nothing leaves,
        # cleared before anything may leave again.
        self._muted_shown = False
        self._mute_changes = 0
        self.missed_at: float | None = None
        self.last_error: str | None = None
        self.transitions: list[tuple[float, str, str, str]] = []
        self.unlocks: list[dict[str, Any]] = []
        self.first_packet_at: float | None = None
        self.audio_stats: Callable[[], dict[str, Any]] | None = None
        self._since = clock.monotonic()
        self._call_tasks: set[asyncio.Task[Any]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle_event = asyncio.Event()
        self._arrived: set[str] = set()
        self._arrival = asyncio.Event()
        self._ever_online = asyncio.Event()
        from appliance.daemon.modes import ModeRunner

        self.modes = ModeRunner(self)

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.refresh_leds()
        await self.link.start(self.on_link_event)
        self.modes.start()

    async def wait_online(self) -> None:
        await self._ever_online.wait()

    async def stop(self) -> None:
        self.modes.stop()
        for task in [*self._call_tasks, *self._tasks]:
            task.cancel()
        if self.call_state is not S.IDLE:
            await self._teardown(leave=True, reject=self.call_state in (S.CALLING, S.RINGING))
        self.sounds.stop()
        self.panel.camera_live(False)
        await self.link.close()

    def healthy(self) -> bool:
        """For the watchdog: the loop runs (we are called) and no state is stuck."""
        stuck_after = self.cfg.timings.connect_timeout_s + 30
        if self.call_state is S.ENDING and self.clock.monotonic() - self._since > stuck_after:
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
        if new is S.CALLING:
            self.sounds.play("ringback", loop=True)
            self._call_task(self._timeout(self.cfg.timings.ring_timeout_s, S.CALLING))
        elif new is S.RINGING:
            self.sounds.play("chime", loop=True)
            self._call_task(self._timeout(self.cfg.timings.ring_timeout_s, S.RINGING))
        elif new is S.CONNECTING:
            self.sounds.stop()
            self._call_task(self._timeout(self.cfg.timings.connect_timeout_s, S.CONNECTING))
        elif new is S.IN_CALL:
            self.sounds.stop()
        elif new is S.ENDING:
            # The camera-live LED goes off in _teardown, once the media is quiet.
            self.sounds.stop()
        elif new is S.IDLE:
            self.sounds.stop()
            self.panel.camera_live(False)
            for task in list(self._call_tasks):
                if task is not asyncio.current_task():
                    task.cancel()
            self.cid = self.caller = None
            self.joined = None
            self._arrived.clear()
            self._idle_event.set()
        if new is not S.IDLE:
            self._idle_event.clear()
        self.refresh_leds()

    def refresh_leds(self) -> None:
        state = self.call_state
        if state is S.IDLE or state is S.ENDING:
            if self.last_error:
                led = "error"
            elif self.link_state is LinkState.OFFLINE:
                led = "offline"
            elif self.missed_at is not None:
                led = "missed"
            else:
                led = "idle"
        elif state is S.IN_CALL:
            led = "muted" if self._muted_shown else "in_call"
        else:
            led = state.value
        self.panel.show(led)

    # ----------------------------------------------------------------------------- tasks

    def _call_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task owned by the current call: cancelled when the call returns to idle."""
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._call_tasks.add(task)
        task.add_done_callback(self._call_tasks.discard)
        # a task cancelled before it ran never awaited its coroutine: close it quietly
        task.add_done_callback(lambda _: coro.close())
        return task

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except (ApplianceError, OSError) as err:
            self._fail(f"{type(err).__name__}: {err}")
        except Exception:
            log.exception("Daemon(%s) unexpected error in %s", self.me, self.call_state.value)
            self._fail("internal error")

    def _fail(self, message: str) -> None:
        log.warning("Daemon(%s) %s failed: %s", self.me, self.cid or "-", message)
        self.last_error = message
        if self.call_state is not S.IDLE:
            self.spawn(self._teardown(leave=True, reject=False))
        else:
            self.refresh_leds()
        self.spawn(self._clear_error())

    async def _clear_error(self) -> None:
        await self.clock.sleep(5.0)
        self.last_error = None
        self.refresh_leds()

    async def _timeout(self, seconds: float, state: CallState) -> None:
        await self.clock.sleep(seconds)
        if self.call_state is not state:
            return
        log.info("Daemon(%s) %s timed out after %.0fs", self.me, state.value, seconds)
        if state is S.CALLING:
            self._mark_missed()
            await self._teardown(leave=False, reject=True, reason="cancel")
        elif state is S.RINGING:
            self._mark_missed()
            self.transition(S.IDLE, "ring timeout")
        else:
            await self._teardown(leave=True, reject=False)

    def _mark_missed(self) -> None:
        self.missed_at = self.clock.monotonic()
        self.spawn(self._clear_missed(self.missed_at))

    async def _clear_missed(self, at: float) -> None:
        await self.clock.sleep(self.cfg.timings.missed_s)
        if self.missed_at == at:
            self.missed_at = None
            self.refresh_leds()

    # ----------------------------------------------------------------------------- buttons

    def on_button(self, event: ButtonEvent) -> None:
        self.act(event.action, source=f"button {event.button} {event.kind}")

    def act(self, action: Action, source: str = "control") -> None:
        state = self.call_state
        if action is Action.TOGGLE:
            if state is S.IDLE:
                action = Action.JOIN if self.cfg.mode is Mode.AUTO_JOIN else Action.CALL
            elif state is S.RINGING:
                action = Action.ANSWER
            else:
                action = Action.HANGUP
        log.info("Daemon(%s) %s: %s in %s", self.me, source, action.value, state.value)
        self.missed_at = None
        if action is Action.CALL and state is S.IDLE:
            self.place_call()
        elif action is Action.ANSWER and state is S.RINGING:
            self.answer(auto=False)
        elif action is Action.REJECT and state is S.RINGING:
            self._call_task(self._reject("decline"))
        elif action is Action.HANGUP and state in (S.CALLING, S.CONNECTING, S.IN_CALL):
            self._call_task(self.hang_up("button"))
        elif action is Action.HANGUP and state is S.RINGING:
            self._call_task(self._reject("decline"))
        elif action is Action.PRIVACY:
            self.set_muted(not self.muted, source)
        elif action is Action.JOIN:
            self.modes.join_now()
        else:
            log.info("Daemon(%s) %s ignored in %s", self.me, action.value, state.value)
        self.refresh_leds()

    # ----------------------------------------------------------------------------- verbs

    def place_call(self) -> None:
        call_id = self.cfg.call_id
        self.cid = f"{self.cfg.call.type}:{call_id}" if call_id else None
        self.transition(S.CALLING, "call pressed")
        self._call_task(self._ring(call_id))

    async def _ring(self, call_id: str) -> None:
        cid = await self.link.ring(self.cfg.call, call_id)
        self.cid = cid
        audit(
            "ring",
            cid,
            self.me,
            f"rang {', '.join(self.cfg.call.ring or [m.user_id for m in self.cfg.call.members])}",
        )

    def answer(self, *, auto: bool) -> None:
        assert self.cid is not None
        audit("auto-answer" if auto else "answer", self.cid, self.caller, "answered")
        self.transition(S.CONNECTING, "auto-answer" if auto else "answer pressed")
        self._call_task(self._accept_and_join(self.cid))

    async def _join_after(self, cid: str, accepter: str | None) -> None:
        """Join once the accepter is in the session (it joins right after accepting): two
        participants joining at the same instant would both see the other and both offer."""
        deadline = self.clock.monotonic() + self.cfg.timings.accept_join_wait_s
        while accepter not in self._arrived and self.clock.monotonic() < deadline:
            self._arrival.clear()
            waker = asyncio.ensure_future(self._arrival.wait())
            sleeper = asyncio.ensure_future(self.clock.sleep(deadline - self.clock.monotonic()))
            try:
                await asyncio.wait({waker, sleeper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
                sleeper.cancel()
        await self.join(cid, create=False)

    async def _accept_and_join(self, cid: str) -> None:
        await self.link.accept(cid)
        await self.join(cid, create=False)

    async def _reject(self, reason: str) -> None:
        cid = self.cid
        if cid is None:
            return
        audit("reject", cid, self.caller, f"rejected ({reason})")
        self.transition(S.IDLE, f"rejected ({reason})")
        await self.link.reject(cid, reason)

    async def join(self, cid: str, *, create: bool, stay: bool = False) -> None:
        """Join ``cid``, start media with the gate closed, light the camera-live LED, then open
        the gate: nothing leaves the device before the LED says so."""
        self.cid = cid
        if self.call_state is not S.CONNECTING:
            self.transition(S.CONNECTING, "joining")
        media = self._media_factory(cid, create, self.on_media_event)
        self.media = media
        self.first_packet_at = None
        media.set_muted(self.muted)  # before anything is negotiated: it holds for every peer
        self._muted_shown = self.muted
        joined = await media.start()
        self.joined = joined
        self.panel.camera_live(self._video_leaves())
        self.gate_open = True
        media.open_gate()
        others = {s: u for s, u in joined.participants.items() if s != joined.session_id}
        if stay or self.cfg.mode is Mode.AUTO_JOIN:
            self.transition(S.IN_CALL, "joined")
        elif not others and self.call_state is S.CONNECTING:
            log.info("Daemon(%s) joined %s, waiting for the other side", self.me, cid)

    def _video_leaves(self) -> bool:
        return self.cfg.media.camera.source != "none" and not self.muted

    async def hang_up(self, reason: str) -> None:
        if self.call_state is S.CALLING:
            await self._teardown(leave=False, reject=True, reason="cancel")
        else:
            await self._teardown(leave=True, reject=False)
        log.info("Daemon(%s) hung up (%s)", self.me, reason)

    async def _teardown(self, *, leave: bool, reject: bool, reason: str = "cancel") -> None:
        """``leave`` is informational: stopping the media leaves the call when it joined."""
        cid, media = self.cid, self.media
        self.transition(S.ENDING, "hanging up")
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
            self.transition(S.IDLE, "hung up")

    def end_locally(self, reason: str) -> None:
        """The server ended the call or the other side left: tear down our side."""
        if self.call_state is S.IDLE:
            return
        log.info("Daemon(%s) %s ended: %s", self.me, self.cid, reason)
        leave = reason != "call.ended"
        self.spawn(self._teardown(leave=leave, reject=False))

    def set_muted(self, muted: bool, source: str) -> None:
        """PRIVACY. The LEDs never claim more than the wire shows: muting, they change once the
        media is quiet; unmuting, they change before the media may send again."""
        self.muted = muted
        audit("mute" if muted else "unmute", self.cid, self.me, source)
        self._mute_changes += 1
        media = self.media
        if muted and media is not None:
            media.set_muted(True)
            self._call_task(self._show_muted_when_quiet(media, self._mute_changes))
            return
        self._muted_shown = muted
        if self.gate_open or muted:  # (muted: also a camera-live LED lit by a pre-announce)
            self.panel.camera_live(self._video_leaves())
        self.refresh_leds()
        if media is not None:
            media.set_muted(muted)

    async def _show_muted_when_quiet(self, media: Media, change: int) -> None:
        await media.quiet()
        if change != self._mute_changes or media is not self.media:
            return
        self._muted_shown = True
        self.panel.camera_live(self._video_leaves())
        self.refresh_leds()

    # ----------------------------------------------------------------------------- server events

    def on_link_event(self, event: LinkEvent) -> None:
        from appliance.daemon.serverevents import handle

        handle(self, event)

    # ----------------------------------------------------------------------------- media events

    def on_media_event(self, event: MediaEvent) -> None:
        log.info("Daemon(%s) media %s %s", self.me, event.kind, event.peer or "")
        if event.kind == "peer_connected" and self.call_state is S.CONNECTING:
            self.transition(S.IN_CALL, "media connected")
        elif event.kind == "first_packet" and self.first_packet_at is None:
            self.first_packet_at = self.clock.time()

    # ----------------------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        panel = self.panel.snapshot()
        return {
            "device": self.me,
            "mode": self.cfg.mode.value,
            "call_state": self.call_state.value,
            "server_link": self.link_state.value,
            "call_cid": self.cid,
            "caller": self.caller,
            "muted": self.muted,
            "media_gate_open": self.gate_open,
            "first_packet_at": self.first_packet_at,
            "leds": panel.get("leds"),
            "relay": panel.get("relay"),
            "buttons": panel.get("buttons"),
            "simulated_panel": panel.get("simulated"),
            "participants": sorted(set(self.joined.participants.values())) if self.joined else [],
            "unlocks": self.unlocks[-5:],
            "audio": self.media.stats()
            if self.media is not None
            else (self.audio_stats() if self.audio_stats is not None else None),
            "last_error": self.last_error,
            "transitions": [
                {"at": at, "from": old, "to": new, "reason": why}
                for at, old, new, why in self.transitions[-10:]
            ],
        }

    def __repr__(self) -> str:
        return f"<Daemon {self.me} {self.call_state.value} {self.link_state.value} {self.cid}>"
