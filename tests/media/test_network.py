"""Media on real networks (issue #16), short versions: TURN relay only, loss, a thin uplink.

The kiosk (``field``, the ``test`` source) and the call server live in namespace a; the receiver
(``hq``, aiortc) in namespace b. Conditions are nftables rules and a tbf cap in the namespaces
(tests/support/netcond.py); coturn runs in namespace a on an address of its own. bench/network.py
measures the same conditions longer and against Chromium.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.media.sources.test import TestSource
from tests.media.test_netns import _start_server, _stop_server, last_counter
from tests.media.video_helpers import Participant
from tests.support import poll
from tests.support.netcond import Firewall, add_address, cap, coturn, netcond_unavailable, uncap
from tests.support.netns import NamespaceLoop, VethPair, veth_pair

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SUBNET = "10.96.0"
TURN_ADDRESS = f"{SUBNET}.3"
CALL_ID = "door-net"


@pytest.fixture
def net() -> Iterator[VethPair]:
    reason = netcond_unavailable()
    if reason:
        pytest.skip(reason)
    with veth_pair(subnet=SUBNET) as pair:
        yield pair


@dataclass
class Call:
    net: VethPair
    side_a: NamespaceLoop
    side_b: NamespaceLoop
    field: Participant
    hq: Participant
    source: TestSource

    def frames(self) -> int:
        return sum(r.frames for r in self.hq.video)

    def peers(self) -> tuple[Any, Any]:
        return next(iter(self.hq.media.peers.values())), next(iter(self.field.media.peers.values()))


@contextlib.asynccontextmanager
async def _call(
    net: VethPair, tmp_path: Path, source: TestSource, **settings: Any
) -> AsyncIterator[Call]:
    async with net.a.loop() as side_a, net.b.loop() as side_b:
        manager, srv, forwarder = await side_a.run(
            _start_server(tmp_path / "server", net.a.address, **settings)
        )
        url = f"http://{net.a.address}:{forwarder.sockets[0].getsockname()[1]}"

        async def make(user: str, **media: Any) -> Participant:
            return Participant(url, srv.api_key, srv.user_token(user), user, CALL_ID, **media)

        field = await side_a.run(make("field", video=source, gate_open=True))
        hq = await side_b.run(make("hq", receive_video=True, gate_open=True))
        try:
            await side_a.run(field.media.start())
            await side_b.run(hq.media.start())
            yield Call(net, side_a, side_b, field, hq, source)
        finally:
            await side_b.run(hq.close())
            await side_a.run(field.close())
            await side_a.run(_stop_server(manager, forwarder))


# -------------------------------------------------------------------------------------- TURN


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_relay_only_call_connects_carries_media_and_survives_an_ice_restart(
    net: VethPair, tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b may send UDP only to coturn's port (udp), or no UDP at all (tcp, tls): the relay is the
    only path. Media must arrive, and again after the offerer restarts ICE (a new allocation)."""
    add_address(net.a, TURN_ADDRESS)
    firewall = Firewall(net.b)
    firewall.block_udp_except(TURN_ADDRESS if transport == "udp" else None, 3478)
    secret = os.urandom(16).hex()
    with coturn(net.a, TURN_ADDRESS, secret, tmp_path / "turn") as turn:
        # aioice checks the TLS certificate with the default context: trust our self-signed one.
        monkeypatch.setenv("SSL_CERT_FILE", str(turn.cert))
        source = TestSource(width=192, height=160, framerate=15, bitrate=200_000)
        async with _call(net, tmp_path, source, ice_servers=[turn.ice_server(transport)]) as call:
            await poll.until(lambda: call.frames() >= 15, within=30)
            hq_peer, field_peer = call.peers()
            assert hq_peer.state == field_peer.state == "connected"
            assert firewall.counter("blocked") > 0  # the direct candidates were tried and dropped
            if transport == "udp":
                assert firewall.counter("relay") > 30  # and media went through coturn
            first = turn.relay_ports(net.a)
            assert first  # coturn holds an allocation

            before = last_counter(call.hq)
            await call.side_b.run(hq_peer.restart("test: ICE restart through the relay"))
            await poll.until(
                lambda: hq_peer.generation >= 1 and hq_peer.state == "connected", within=20.0
            )
            await poll.until(lambda: last_counter(call.hq) > before + 15, within=30)
            assert turn.relay_ports(net.a) - first  # the new connection took a new allocation


# -------------------------------------------------------------------------------------- loss


# Its failures were the sender refusing retransmissions (see appliance/media/retransmit.py): after
# that fix it passed 10 of 10 runs alone (load 14-20) and 6 of 7 inside larger runs (load 19-26);
# the one failure (load ~24) was not captured, so the assertion now names the gate's counts too.
# One rerun until that one is understood.
@pytest.mark.flaky(reruns=1)
async def test_video_keeps_decoding_at_five_percent_loss_each_way_with_nack_and_pli(
    net: VethPair, tmp_path: Path
) -> None:
    """nftables drops 5 % of b's UDP in and out. The receiver asks again (NACK, PLI); our sender
    hears it (counted) and retransmits, and pictures keep coming out of the decoder."""
    firewall = Firewall(net.b)
    source = TestSource(width=320, height=240, framerate=15, bitrate=300_000)
    async with _call(net, tmp_path, source) as call:
        await poll.until(lambda: call.frames() >= 5, within=30)
        firewall.loss(5)
        fanout = call.field.media.fanout
        assert fanout is not None
        start_frames, start_sent = call.frames(), source.frames_delivered
        await poll.until(lambda: fanout.bitrate.counts["nacked_packets"] >= 10, within=30)
        await poll.until(lambda: source.frames_delivered - start_sent >= 90, within=30)
        sent = source.frames_delivered - start_sent
        # aiortc's receiver holds every picture behind a missing packet until the packet comes,
        # and asks for it again only at its next gap: those pictures come out a little later, so
        # the decoder gets up to 5 s to catch up with what was sent by then. It does not if the
        # sender leaves a hole (a NACK refused): the receiver then waits for 512 later packets,
        # 10-15 s here, and the count stays where the hole froze it.
        with contextlib.suppress(TimeoutError):
            await poll.until(lambda: call.frames() - start_frames >= 0.8 * sent, within=5)
        decoded = call.frames() - start_frames
        assert firewall.counter("loss") > 10  # the loss was real
        gate = call.peers()[1].retransmits
        assert gate is not None
        assert decoded >= 0.8 * sent, (decoded, sent, fanout.bitrate.counts, gate.counts)
        print(f"decoded {decoded}/{sent}, feedback {fanout.bitrate.counts}, resent {gate.counts}")


# ------------------------------------------------------------------------------ thin uplink


async def test_bitrate_goes_down_under_a_tbf_cap_and_up_again_when_it_is_lifted(
    net: VethPair, tmp_path: Path
) -> None:
    """The kiosk's uplink is capped at 250 kbit/s with a 1 Mbit/s camera: the receivers' feedback
    lowers the source's bitrate; without the cap it climbs back."""
    source = TestSource(width=320, height=240, framerate=15, bitrate=1_000_000)
    async with _call(net, tmp_path, source) as call:
        await poll.until(lambda: call.frames() >= 5, within=30)
        assert source.bitrate == 1_000_000
        cap(net.a, net.a.interface, "250kbit")
        await poll.until(lambda: source.bitrate <= 400_000, within=30)
        lowest = source.bitrate
        frames = call.frames()
        await poll.until(lambda: call.frames() > frames + 15, within=30)  # still moving
        uncap(net.a, net.a.interface)
        await poll.until(lambda: source.bitrate >= 1.5 * lowest, within=40)
        fanout = call.field.media.fanout
        assert fanout is not None
        print(f"lowest {lowest}, now {source.bitrate}, feedback {fanout.bitrate.counts}")
