"""Mode behaviour layered on the state machine: auto-answer (answer mode) and auto_join.

auto_join joins the configured call at start (or at ``starts_at``) and stays joined: whenever
the daemon falls back to idle — the call ended, the session dropped us, a join failed — it
rejoins after a backoff that doubles up to ``rejoin_max_s``, forever. After the server link
comes back it checks that its participant session survived and rejoins if not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from appliance.daemon.config import Mode
from appliance.daemon.ports import CallState
from appliance.errors import APIError, ApplianceError, NotFound

if TYPE_CHECKING:
    from appliance.daemon.machine import Daemon

log = logging.getLogger(__name__)


class ModeRunner:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.rejoins = 0
        self._appointments: dict[str, asyncio.Task[None]] = {}
        self._done: set[str] = set()

    def start(self) -> None:
        cfg = self.d.cfg
        loop = asyncio.get_running_loop()
        if cfg.mode is Mode.AUTO_JOIN:
            self._task = loop.create_task(self._auto_join())
            return
        if cfg.call.starts_at is not None and cfg.call_id:
            cid = f"{cfg.call.type}:{cfg.call_id}"
            self._schedule(cid, cfg.call.starts_at.timestamp())
        if cfg.mode is Mode.ANSWER and cfg.timings.appointment_poll_s > 0:
            self._task = loop.create_task(self._poll_appointments())

    def stop(self) -> None:
        for task in [self._task, *self._appointments.values()]:
            if task is not None:
                task.cancel()
        self._task = None
        self._appointments.clear()

    # ------------------------------------------------------------------------ appointments

    def _schedule(self, cid: str, at: float) -> None:
        """Join ``cid`` at ``at`` (a scheduled appointment), once per (cid, time)."""
        key = f"{cid}@{at:.0f}"
        if key in self._appointments or key in self._done:
            return
        log.info("Daemon(%s) appointment %s at %.0f", self.d.me, cid, at)
        self._appointments[key] = asyncio.get_running_loop().create_task(
            self._appointment(key, cid, at)
        )

    async def _appointment(self, key: str, cid: str, at: float) -> None:
        from appliance.daemon.audit import audit

        d = self.d
        try:
            wait = at - d.clock.time()
            if wait > 0:
                await d.clock.sleep(wait)
            while d.call_state is not CallState.IDLE:
                await d._idle_event.wait()
            audit("appointment", cid, d.me, "joining a scheduled call")
            d.spawn(d.join(cid, create=True, stay=True))
        finally:
            self._done.add(key)
            self._appointments.pop(key, None)

    async def _poll_appointments(self) -> None:
        d = self.d
        period = d.cfg.timings.appointment_poll_s
        while True:
            if d.link_state.value == "online":
                try:
                    for cid, at in await d.link.upcoming(period * 2):
                        if at > d.clock.time() - period * 2:
                            self._schedule(cid, at)
                except (APIError, OSError) as err:
                    log.info("Daemon(%s) cannot look up appointments: %s", d.me, err)
            await d.clock.sleep(period)

    # ------------------------------------------------------------------------ auto-answer

    def maybe_auto_answer(self) -> None:
        rule = self.d.cfg.auto_answer
        if rule is None or self.d.cid is None:
            return
        self.d._call_task(self._auto_answer(self.d.cid, self.d.caller))

    async def _auto_answer(self, cid: str, caller: str | None) -> None:
        rule = self.d.cfg.auto_answer
        assert rule is not None
        allowed = caller in rule.users
        if not allowed and rule.roles and caller is not None:
            role = await self.d.link.member_role(cid, caller)
            allowed = role in rule.roles
        if not allowed:
            log.info(
                "Daemon(%s) %s: caller %s is not on the auto-answer list", self.d.me, cid, caller
            )
            return
        await self.d.clock.sleep(rule.delay_s)
        if self.d.call_state is not CallState.RINGING or self.d.cid != cid:
            return
        self.d.sounds.stop()
        # Warn the room before anything can leave it: chime, then the camera-live LED, then
        # (in join) media with the gate opened last.
        self.d.panel.camera_live(self.d._video_leaves())
        await self.d.sounds.play_once("pre_announce")
        if self.d.call_state is CallState.RINGING and self.d.cid == cid:
            self.d.answer(auto=True)

    # ------------------------------------------------------------------------ auto_join

    def join_now(self) -> None:
        self._wake.set()

    def on_reconnect(self) -> None:
        if self.d.cfg.mode is not Mode.AUTO_JOIN:
            return
        self.d.spawn(self._check_still_joined())

    async def _check_still_joined(self) -> None:
        joined = self.d.joined
        if joined is None or self.d.call_state is not CallState.IN_CALL:
            self._wake.set()
            return
        try:
            sessions = await self.d.link.participant_sessions(joined.cid)
        except NotFound:
            sessions = None  # the server lost the call (a new database): join it again
        except (APIError, OSError) as err:
            log.info("Daemon(%s) cannot check %s after reconnect: %s", self.d.me, joined.cid, err)
            return
        if sessions is None or joined.session_id not in sessions:
            log.info("Daemon(%s) dropped from %s while offline; rejoining", self.d.me, joined.cid)
            self.d.end_locally("dropped while offline")

    async def _auto_join(self) -> None:
        d = self.d
        cfg = d.cfg
        cid = f"{cfg.call.type}:{cfg.call_id}"
        starts_at = cfg.call.starts_at
        if starts_at is not None:
            wait = starts_at.timestamp() - d.clock.time()
            if wait > 0:
                log.info("Daemon(%s) joining %s at %s (in %.0fs)", d.me, cid, starts_at, wait)
                await d.clock.sleep(wait)
        delay = cfg.timings.rejoin_min_s
        while True:
            if d.call_state is CallState.IDLE:
                joined_at = d.clock.monotonic()
                try:
                    await d.join(cid, create=True)
                except asyncio.CancelledError:
                    raise
                except (ApplianceError, OSError) as err:
                    log.warning(
                        "Daemon(%s) join %s failed: %s; retry in %.1fs", d.me, cid, err, delay
                    )
                    if d.media is not None or d.call_state is not CallState.IDLE:
                        await d._teardown(leave=True, reject=False)
                    await self._sleep(delay)
                    delay = min(delay * 2, cfg.timings.rejoin_max_s)
                    continue
                await d._idle_event.wait()
                self.rejoins += 1
                if d.clock.monotonic() - joined_at > cfg.timings.rejoin_max_s:
                    delay = cfg.timings.rejoin_min_s
                log.info("Daemon(%s) left %s; rejoining in %.1fs", d.me, cid, delay)
                await self._sleep(delay)
                delay = min(delay * 2, cfg.timings.rejoin_max_s)
            else:
                await d._idle_event.wait()

    async def _sleep(self, seconds: float) -> None:
        """Back off, but a JOIN press or a reconnect cuts the wait short."""
        self._wake.clear()
        sleeper = asyncio.ensure_future(self.d.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
