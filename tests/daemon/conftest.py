from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from appliance.clock import ManualClock
from appliance.daemon.config import DeviceConfig
from appliance.daemon.machine import Daemon
from appliance.hardware.panel import Panel
from appliance.yamlload import parse_yaml_text
from tests.daemon.fakes import FakeLink, FakeMedia, FakeSounds

BASE = """
device: {id: door-1, name: Door}
server: embedded
call:
  type: default
  id: "door-{device}"
  members: [alice:admin, bob]
mode: call
buttons:
  - {name: call, pin: 17, press: toggle, hold: hangup, cooldown: 1.0}
  - {name: privacy, pin: 18, press: privacy}
leds:
  status: {pin: 27}
  camera_live: {pin: 22}
relay: {pin: 23, pulse_ms: 1000, unlock_roles: [admin], min_interval_s: 5, hangup_after_unlock_s: 3}
timings: {ring_timeout_s: 30, missed_s: 10, connect_timeout_s: 20, rejoin_min_s: 1, rejoin_max_s: 8}
"""


def make_config(text: str = BASE, **top: Any) -> DeviceConfig:
    doc = parse_yaml_text(text)
    data = {**doc.data, **top}
    return DeviceConfig.model_validate(data)


@dataclass
class Rig:
    daemon: Daemon
    link: FakeLink
    clock: ManualClock
    panel: Panel
    sounds: FakeSounds
    media_log: list[str] = field(default_factory=list)
    medias: list[FakeMedia] = field(default_factory=list)

    async def settle(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        await self.settle()
        self.clock.advance(seconds)
        await self.settle()

    async def press(self, name: str, hold: bool = False) -> None:
        button = self.panel.buttons[name]
        button.pin.drive_low()
        await self.settle()
        await self.advance(button.cfg.hold_time + 0.1 if hold else 0.2)
        button.pin.drive_high()
        await self.settle()

    @property
    def state(self) -> str:
        return self.daemon.call_state.value

    def led(self) -> str:
        return self.panel.status_led.state

    def states(self) -> list[str]:
        return [new for _, _, new, _ in self.daemon.transitions]


async def build(cfg: DeviceConfig) -> AsyncIterator[Rig]:
    clock = ManualClock()
    link = FakeLink(cfg.device.id)
    sounds = FakeSounds()
    factory = MockFactory()
    rig_holder: list[Rig] = []

    def media_factory(cid: str, create: bool, on_event: Any) -> FakeMedia:
        m = FakeMedia(link, cid, create, on_event, rig_holder[0].media_log)
        rig_holder[0].medias.append(m)
        return m

    panel = Panel(cfg, factory, clock, asyncio.get_running_loop())
    daemon = Daemon(cfg, link, media_factory, panel, sounds, clock)
    panel.bind(daemon.on_button)
    rig = Rig(daemon, link, clock, panel, sounds)
    rig_holder.append(rig)
    await daemon.start()
    await rig.settle()
    try:
        yield rig
    finally:
        await daemon.stop()
        panel.close()
        factory.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for r in build(make_config()):
        yield r


async def into_call(rig: Rig, cid: str = "default:door-door-1", peer: str = "alice") -> None:
    """Place a call and get it answered by ``peer``: the daemon ends up in_call."""
    from appliance.daemon.ports import MediaEvent

    rig.link.participants = {f"{peer}-s": peer}
    await rig.press("call")
    rig.link.emit("call.accepted", cid, user_id=peer)
    rig.link.emit(
        "call.session_participant_joined", cid, user_id=peer, participant_session=f"{peer}-s"
    )
    await rig.settle()
    rig.medias[-1].on_event(MediaEvent("peer_connected", peer=f"{peer}-s"))
    await rig.settle()
    assert rig.state == "in_call"
