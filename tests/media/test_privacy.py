"""Privacy: nothing leaves a device before its gate opens or while it is muted, across every
negotiation (issue #9).

Two CallMedia sessions through a real server: the *device* (``door``: a 697 Hz tone as its
microphone, the test camera) and the far end (``alice``: a 1209 Hz tone, receives video). What
the device sends is counted where aiortc hands each RTP packet to the socket
(:mod:`tests.media.rtp_meter`), not what alice happened to decode. Every "nothing was sent"
window is one in which the same connection demonstrably carried media: alice's audio reached the
device all along, and the device's own audio and video flow on that connection once allowed (its
tone is found at alice by its frequency).

The figures (packets sent while they must not be, time from unmute / gate open to the first
packet) are printed as ``privacy-figure`` lines (``pytest -s``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from appliance.media.peer import Peer
from appliance.media.session import CallMedia
from appliance.media.sources.test import TestSource
from tests.media.rtp_meter import RtpMeter
from tests.media.video_helpers import Participant, ToneTrack
from tests.support import poll
from tests.support.server import ServerHandle, running_server
from tests.support.tone import dominant_frequency

CALL_ID = "room-7"
DOOR_TONE, ALICE_TONE = 697.0, 1209.0
KINDS = ("audio", "video")
ROLES = ["device-answers", "device-offers"]


@pytest_asyncio.fixture
async def srv(tmp_path: Path) -> AsyncIterator[ServerHandle]:
    async with running_server(tmp_path, users=["door", "alice"]) as handle:
        yield handle


@pytest.fixture
def meter(monkeypatch: pytest.MonkeyPatch) -> RtpMeter:
    return RtpMeter().install(monkeypatch)


def privacy(media: CallMedia, on: bool) -> None:
    """The PRIVACY button's effect on the media: microphone and camera together."""
    media.mute_microphone(on)
    media.mute_camera(on)


def figure(case: str, **values: Any) -> None:
    print(f"privacy-figure {case}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


@dataclass
class Call:
    door: Participant
    alice: Participant
    meter: RtpMeter

    @property
    def door_id(self) -> str:
        assert self.door.media.session_id is not None
        return self.door.media.session_id

    @property
    def door_peer(self) -> Peer:
        return next(iter(self.door.media.peers.values()))

    @property
    def alice_peer(self) -> Peer:
        return next(iter(self.alice.media.peers.values()))

    def sent(self, kind: str, **kwargs: Any) -> int:
        return self.meter.count(self.door_id, kind, **kwargs)

    async def connected(self, generation: int = 0) -> None:
        await poll.until(
            lambda: bool(self.door.media.peers) and bool(self.alice.media.peers), within=20.0
        )
        for peer in (self.door_peer, self.alice_peer):
            await poll.until(
                lambda p=peer: p.state == "connected" and p.generation == generation,  # type: ignore[misc]
                within=30,
            )

    async def door_hears_alice(self, seconds: float) -> None:
        """The connection demonstrably carries media: ``seconds`` of alice's audio reached the
        device on its newest connection (a new connection brings a new track)."""
        await poll.until(lambda: bool(self.door.audio), within=20.0)
        reader = self.door.audio[-1]
        start = reader.seconds
        await poll.until(lambda: reader.seconds >= start + seconds, within=30)
        assert dominant_frequency(reader.samples(0.5)) == pytest.approx(ALICE_TONE, abs=5)

    async def door_flows(self, since: float, audio: int = 25, video: int = 5) -> dict[str, float]:
        """The device's audio and video leave it again; seconds from ``since`` to the first packet
        of each kind."""
        await poll.until(
            lambda: (
                self.sent("audio", since=since) >= audio
                and self.sent("video", since=since) >= video
            ),
            within=30,
        )
        firsts = {k: self.meter.first_after(self.door_id, k, since) for k in KINDS}
        return {k: round(v, 3) for k, v in firsts.items() if v is not None}

    async def resumes(self, since: float) -> dict[str, float]:
        """After unmute / gate open at ``since``: both kinds leave again and alice hears the
        device's tone; returns the seconds to the first packet of each kind."""
        first = await self.door_flows(since)
        await self.alice_hears_door()
        return first

    async def alice_hears_door(self) -> None:
        await poll.until(lambda: bool(self.alice.audio), within=20.0)
        reader = self.alice.audio[-1]
        start = reader.seconds
        await poll.until(lambda: reader.seconds >= start + 1.0, within=30)
        assert dominant_frequency(reader.samples(0.5)) == pytest.approx(DOOR_TONE, abs=5)


@asynccontextmanager
async def call(
    srv: ServerHandle,
    meter: RtpMeter,
    *,
    device_offers: bool,
    privacy_first: bool = False,
    **door: Any,
) -> AsyncIterator[Call]:
    """The device and the far end in one call; the newcomer (who joins second) offers.

    ``privacy_first``: the daemon's order with PRIVACY on: mute microphone and camera, start,
    open the gate as soon as the join returned."""
    source = TestSource(width=192, height=160, framerate=15)
    door_p = Participant(
        srv.base_url, srv.api_key, srv.user_token("door"), "door", CALL_ID,
        video=source, audio=ToneTrack(DOOR_TONE), **door,
    )  # fmt: skip
    alice_p = Participant(
        srv.base_url, srv.api_key, srv.user_token("alice"), "alice", CALL_ID,
        audio=ToneTrack(ALICE_TONE), receive_video=True, gate_open=True,
    )  # fmt: skip
    if privacy_first:
        privacy(door_p.media, True)
    first, second = (alice_p, door_p) if device_offers else (door_p, alice_p)
    try:
        await first.media.start()
        await second.media.start()
        if privacy_first:
            door_p.media.open_gate()
        result = Call(door_p, alice_p, meter)
        await result.connected()
        assert result.door_peer.offerer is device_offers
        yield result
    finally:
        await alice_p.close()
        await door_p.close()


@pytest.mark.parametrize("role", ROLES)
async def test_nothing_leaves_before_the_gate_opens(
    srv: ServerHandle, meter: RtpMeter, role: str
) -> None:
    async with call(srv, meter, device_offers=role == "device-offers") as c:
        await c.door_hears_alice(2.0)  # ~100 audio packets would have left by now
        assert c.door.media.fanout is not None and c.door.media.fanout.frames_held > 10
        held = {k: c.sent(k) for k in KINDS}
        assert held == {"audio": 0, "video": 0}

        opened = time.monotonic()
        c.door.media.open_gate()
        first = await c.resumes(opened)
        figure(f"gate closed, {role}", sent_while_closed=held, first_packet_after_open_s=first)


@pytest.mark.parametrize("role", ROLES)
async def test_muted_before_the_call_sends_nothing_until_unmuted(
    srv: ServerHandle, meter: RtpMeter, role: str
) -> None:
    async with call(srv, meter, device_offers=role == "device-offers", privacy_first=True) as c:
        await c.door_hears_alice(2.0)
        held = {k: c.sent(k) for k in KINDS}
        assert held == {"audio": 0, "video": 0}

        unmuted = time.monotonic()
        privacy(c.door.media, False)
        first = await c.resumes(unmuted)
        figure(
            f"muted before the call, {role}",
            sent_while_muted=held,
            first_packet_after_unmute_s=first,
        )


@pytest.mark.parametrize("restart_by", ["device", "far-end"])
async def test_privacy_holds_through_an_ice_restart(
    srv: ServerHandle, meter: RtpMeter, restart_by: str
) -> None:
    async with call(srv, meter, device_offers=restart_by == "device", gate_open=True) as c:
        await c.resumes(0.0)  # the device sends while live

        privacy(c.door.media, True)
        old = {k: c.meter.ssrcs_of(c.door_id, k) for k in KINDS}
        restarting = c.door_peer if restart_by == "device" else c.alice_peer
        await restarting.restart("test")
        await c.connected(generation=1)
        await c.door_hears_alice(2.0)  # the new connection carries alice's audio
        new = {k: c.meter.ssrcs_of(c.door_id, k) - old[k] for k in KINDS}
        assert new["audio"] and new["video"], "the device described new senders"
        held = {k: c.sent(k, ssrcs=new[k]) for k in KINDS}
        assert held == {"audio": 0, "video": 0}

        unmuted = time.monotonic()
        privacy(c.door.media, False)
        first = await c.resumes(unmuted)
        assert all(c.sent(k, ssrcs=new[k]) > 0 for k in KINDS)
        figure(
            f"PRIVACY mute then ICE restart by the {restart_by}",
            sent_on_new_connection_while_muted=held,
            first_packet_after_unmute_s=first,
        )


async def test_unmuting_one_kind_lets_only_that_kind_out(
    srv: ServerHandle, meter: RtpMeter
) -> None:
    """Microphone and camera are separate: the camera stays muted while the microphone talks,
    also on a connection negotiated after the mute."""
    async with call(srv, meter, device_offers=True, gate_open=True) as c:
        await c.door_flows(0.0)
        c.door.media.mute_camera(True)
        old = c.meter.ssrcs_of(c.door_id, "video")
        await c.door_peer.restart("test")
        await c.connected(generation=1)
        since = time.monotonic()
        await c.door_flows(since, video=0)  # audio flows on the new connection...
        await c.door_hears_alice(1.0)
        new = c.meter.ssrcs_of(c.door_id, "video") - old
        assert new and c.sent("video", ssrcs=new) == 0  # ...video does not
        c.door.media.mute_camera(False)
        await c.door_flows(time.monotonic())


# --------------------------------------------------------------------------- the stall watchdog


async def _on(loop: Any, action: Any) -> float:
    """Run ``action`` on the loop that owns the device; returns when it ran (monotonic)."""

    async def run() -> float:
        at = time.monotonic()
        action()
        return at

    at: float = await loop.run(run())
    return at


@pytest.mark.netns
@pytest.mark.timeout(180)
@pytest.mark.parametrize("role", ROLES)
async def test_privacy_holds_when_the_stall_watchdog_restarts_after_a_link_drop(
    tmp_path: Path, meter: RtpMeter, role: str
) -> None:
    """The device (and the server) in namespace a, the far end in b; the link between them goes
    down until the offerer's watchdog gives the connection up, then comes back: the restarted
    connection must not carry the muted device's microphone or camera."""
    from tests.media.test_netns import _start_server, _stop_server
    from tests.support.netns import veth_pair

    device_offers = role == "device-offers"
    with veth_pair(subnet="10.96.0") as net:
        async with net.a.loop() as side_a, net.b.loop() as side_b:
            manager, srv, forwarder = await side_a.run(_start_server(tmp_path, net.a.address))
            port = forwarder.sockets[0].getsockname()[1]
            url = f"http://{net.a.address}:{port}"

            async def make_door() -> Participant:
                source = TestSource(width=192, height=160, framerate=15)
                return Participant(
                    url, srv.api_key, srv.user_token("field"), "door", CALL_ID,
                    video=source, audio=ToneTrack(DOOR_TONE), gate_open=True,
                )  # fmt: skip

            async def make_alice() -> Participant:
                return Participant(
                    url, srv.api_key, srv.user_token("hq"), "alice", CALL_ID,
                    audio=ToneTrack(ALICE_TONE), receive_video=True, gate_open=True,
                )  # fmt: skip

            door = await side_a.run(make_door())
            alice = await side_b.run(make_alice())
            c = Call(door, alice, meter)
            try:
                if device_offers:
                    await side_b.run(alice.media.start())
                    await side_a.run(door.media.start())
                else:
                    await side_a.run(door.media.start())
                    await side_b.run(alice.media.start())
                await c.connected()
                assert c.door_peer.offerer is device_offers
                await c.resumes(0.0)

                await _on(side_a, lambda: privacy(door.media, True))
                old = {k: meter.ssrcs_of(c.door_id, k) for k in KINDS}
                offerer = c.door_peer if device_offers else c.alice_peer
                net.link_down()
                await poll.until(
                    lambda: offerer.state != "connected" and offerer.restarts >= 1, within=20.0
                )
                net.link_up()
                await poll.until(
                    lambda: (
                        c.door_peer.state == "connected" == c.alice_peer.state
                        and c.door_peer.generation == c.alice_peer.generation >= 1
                    ),
                    within=60,
                )
                await c.door_hears_alice(2.0)
                new = {k: meter.ssrcs_of(c.door_id, k) - old[k] for k in KINDS}
                assert new["audio"] and new["video"], "the device described new senders"
                held = {k: c.sent(k, ssrcs=new[k]) for k in KINDS}
                assert held == {"audio": 0, "video": 0}

                unmuted = await _on(side_a, lambda: privacy(door.media, False))
                first = await c.resumes(unmuted)
                figure(
                    f"PRIVACY mute then link drop and watchdog restart, {role}",
                    sent_on_new_connection_while_muted=held,
                    first_packet_after_unmute_s=first,
                )
            finally:
                await side_b.run(alice.close())
                await side_a.run(door.close())
                await side_a.run(_stop_server(manager, forwarder))
