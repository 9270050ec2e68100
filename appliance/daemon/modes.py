"""Mode behaviour layered on the state machine: auto-answer (answer mode) and auto_join.

auto_join joins the configured call at start (or at ``starts_at``) and stays joined: whenever
the daemon falls back to idle — the call ended, the session dropped us, a join failed — it
rejoins after a backoff that doubles up to ``rejoin_max_s``, forever. After the server link
comes back it checks that its participant session survived and rejoins if not.
"""

from __future__ import annotations

import asyncio
import logging

from appliance.daemon.audit import audit
from appliance.daemon.config import Mode
from appliance.daemon.ports import CallState, Machine
from appliance.errors import APIError, ApplianceError, NotFound

log = logging.getLogger(__name__)


class ModeRunner:
    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.rejoins = 0
        self._appointments: dict[str, asyncio.Task[None]] = {}
        self._done: set[str] = set()

    def start(self) -> None:
        cfg = self.m.cfg
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
        log.info("Daemon(%s) appointment %s at %.0f", self.m.me, cid, at)
        self._appointments[key] = asyncio.get_running_loop().create_task(
            self._appointment(key, cid, at)
        )

    async def _appointment(self, key: str, cid: str, at: float) -> None:
        m = self.m
        try:
            wait = at - m.clock.time()
            if wait > 0:
                await m.clock.sleep(wait)
            while m.call_state is not CallState.IDLE:
                await m.wait_idle()
            audit("appointment", cid, m.me, "joining a scheduled call")
            m.spawn(m.join(cid, create=True, stay=True))
        finally:
            self._done.add(key)
            self._appointments.pop(key, None)

    async def _poll_appointments(self) -> None:
        m = self.m
        period = m.cfg.timings.appointment_poll_s
        while True:
            if m.link_state.value == "online":
                try:
                    for cid, at in await m.link.upcoming(period * 2):
                        if at > m.clock.time() - period * 2:
                            self._schedule(cid, at)
                except (APIError, OSError) as err:
                    log.info("Daemon(%s) cannot look up appointments: %s", m.me, err)
            await m.clock.sleep(period)

    # ------------------------------------------------------------------------ auto-answer

    def maybe_auto_answer(self) -> None:
        rule = self.m.cfg.auto_answer
        if rule is None or self.m.cid is None:
            return
        self.m.call_task(self._auto_answer(self.m.cid, self.m.caller))

    async def _auto_answer(self, cid: str, caller: str | None) -> None:
        rule = self.m.cfg.auto_answer
        assert rule is not None
        allowed = caller in rule.users
        if not allowed and rule.roles and caller is not None:
            role = await self.m.link.member_role(cid, caller)
            allowed = role in rule.roles
        if not allowed:
            log.info(
                "Daemon(%s) %s: caller %s is not on the auto-answer list", self.m.me, cid, caller
            )
            return
        await self.m.clock.sleep(rule.delay_s)
        if self.m.call_state is not CallState.RINGING or self.m.cid != cid:
            return
        self.m.sounds.stop()
        # Warn the room before anything can leave it: chime, then the camera-live LED, then
        # (in join) media with the gate opened last.
        self.m.panel.camera_live(self.m.video_leaves())
        await self.m.sounds.play_once("pre_announce")
        if self.m.call_state is CallState.RINGING and self.m.cid == cid:
            self.m.answer(auto=True)

    # ------------------------------------------------------------------------ auto_join

    def join_now(self) -> None:
        self._wake.set()

    def on_reconnect(self) -> None:
        if self.m.cfg.mode is not Mode.AUTO_JOIN:
            return
        self.m.spawn(self._check_still_joined())

    async def _check_still_joined(self) -> None:
        joined = self.m.joined
        if joined is None or self.m.call_state is not CallState.IN_CALL:
            self._wake.set()
            return
        try:
            sessions = await self.m.link.participant_sessions(joined.cid)
        except NotFound:
            sessions = None  # the server lost the call (a new database): join it again
        except (APIError, OSError) as err:
            log.info("Daemon(%s) cannot check %s after reconnect: %s", self.m.me, joined.cid, err)
            return
        if sessions is None or joined.session_id not in sessions:
            log.info("Daemon(%s) dropped from %s while offline; rejoining", self.m.me, joined.cid)
            self.m.end_locally("dropped while offline")

    async def _auto_join(self) -> None:
        m = self.m
        cfg = m.cfg
        cid = f"{cfg.call.type}:{cfg.call_id}"
        starts_at = cfg.call.starts_at
        if starts_at is not None:
            wait = starts_at.timestamp() - m.clock.time()
            if wait > 0:
                log.info("Daemon(%s) joining %s at %s (in %.0fs)", m.me, cid, starts_at, wait)
                await m.clock.sleep(wait)
        delay = cfg.timings.rejoin_min_s
        while True:
            if m.call_state is CallState.IDLE:
                joined_at = m.clock.monotonic()
                try:
                    await m.join(cid, create=True)
                except asyncio.CancelledError:
                    raise
                except (ApplianceError, OSError) as err:
                    log.warning(
                        "Daemon(%s) join %s failed: %s; retry in %.1fs", m.me, cid, err, delay
                    )
                    if m.media is not None or m.call_state is not CallState.IDLE:
                        await m.tear_down()
                    await self._sleep(delay)
                    delay = min(delay * 2, cfg.timings.rejoin_max_s)
                    continue
                await m.wait_idle()
                self.rejoins += 1
                if m.clock.monotonic() - joined_at > cfg.timings.rejoin_max_s:
                    delay = cfg.timings.rejoin_min_s
                log.info("Daemon(%s) left %s; rejoining in %.1fs", m.me, cid, delay)
                await self._sleep(delay)
                delay = min(delay * 2, cfg.timings.rejoin_max_s)
            else:
                await m.wait_idle()

    async def _sleep(self, seconds: float) -> None:
        """Back off, but a JOIN press or a reconnect cuts the wait short."""
        self._wake.clear()
        sleeper = asyncio.ensure_future(self.m.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
