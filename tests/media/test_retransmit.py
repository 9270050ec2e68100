"""Which NACKed packets are resent: the gate's rules with a manual clock, then a real aiortc sender
in a loopback pair NACKed for fresh, old and forgotten packets, counting what goes out again."""

from __future__ import annotations

import asyncio

from aiortc.rtp import RtpPacket, is_rtcp

from appliance.clock import ManualClock
from appliance.media.aiortc_compat import on_retransmit
from appliance.media.retransmit import RetransmitGate
from tests.media.test_aiortc_compat import Pair
from tests.support import poll


def test_a_packet_asked_for_again_is_resent_however_old_and_only_gone_ones_are_refused() -> None:
    """An aiortc receiver asks again for a packet only at its next gap (often seconds later) and
    shows nothing behind the hole until then: the second request is served whatever the age. The
    steps are the ones a 5 % loss run logged (300 kbit/s, 5 % reported loss)."""
    clock = ManualClock()
    unserved: list[str] = []
    gate = RetransmitGate(lambda: 300_000, on_unserved=unserved.append, clock=clock)
    gate.loss = 0.05
    assert [gate.decide(seq, 0.01, 1300) for seq in (1, 2)] == [2, 2]  # the bucket is empty
    assert gate.decide(10, 0.07, 1030) == 0  # refused: over the budget
    clock.advance(1.6)  # the receiver's next gap
    assert gate.decide(10, 1.67, 1030) == 2
    assert gate.decide(11, None, 0) == 0  # no longer in aiortc's history
    assert unserved == ["over_budget", "gone"]
    assert gate.counts == {"resent": 3, "over_budget": 1, "gone": 1, "duplicated": 3}


def test_at_a_low_bitrate_one_nack_of_two_full_packets_gets_both_copies_of_each() -> None:
    """0.25 s of the share is 2.3 kB at 300 kbit/s: the bucket still holds four full packets."""
    gate = RetransmitGate(lambda: 300_000, clock=ManualClock())
    gate.loss = 0.05
    assert [gate.decide(seq, 0.02, 1300) for seq in (1, 2)] == [2, 2]
    assert gate.decide(3, 0.02, 1300) == 0  # and then the budget is spent


def test_under_random_loss_each_retransmission_goes_out_twice_under_congestion_once() -> None:
    gate = RetransmitGate(lambda: 1_000_000, clock=ManualClock())
    assert gate.decide(1, 0.01, 1000) == 1  # no loss reported
    gate.loss = 0.05
    assert gate.decide(2, 0.01, 1000) == 2
    gate.loss = 0.4  # a full link: no extra traffic
    assert gate.decide(3, 0.01, 1000) == 1
    assert gate.counts["duplicated"] == 1 and gate.resent_bytes == 4000


def test_retransmissions_get_at_most_a_share_of_the_bitrate() -> None:
    clock = ManualClock()
    gate = RetransmitGate(lambda: 1_000_000, clock=clock)  # 25 % of 1 Mbit/s: 31,250 B/s
    resent = 0
    for _ in range(100):  # 10 s of NACKs asking for 100 packets of 1,000 bytes a second
        for _ in range(10):
            resent += gate.decide(0, 0.01, 1000)
        clock.advance(0.1)
    # a burst of 0.25 s worth, then the rate: about 7.8 + 10 s x 31.25 packets
    assert 300 <= resent <= 325, resent
    assert gate.counts["over_budget"] == 1000 - resent


async def test_an_aiortc_sender_resends_only_what_the_gate_lets_through() -> None:
    """Audio flows in a loopback pair; the receiver NACKs fresh, old and forgotten packets."""
    pair = Pair()
    sent: list[int] = []
    asked: list[tuple[int, float | None]] = []
    fresh: list[int] = []
    try:
        sender = pair.audio.sender
        transport = sender.transport
        original_send = transport._send_rtp

        async def counting_send(data: bytes) -> None:
            if not is_rtcp(data):
                sent.append(RtpPacket.parse(data).sequence_number)
            await original_send(data)

        transport._send_rtp = counting_send  # the test observes aiortc's wire itself

        def decide(seq: int, age: float | None, size: int) -> int:
            asked.append((seq, age))
            if age is None or age > 0.3:
                return 0
            return 2 if seq == fresh[0] else 1

        on_retransmit(sender, decide, clock_rate=48000)
        await pair.negotiate()
        await poll.until(lambda: len(sent) >= 60, within=20.0)  # 1.2 s of 20 ms packets
        receiver = pair.their(pair.audio).receiver
        ssrc = next(s.ssrc for s in (await sender.getStats()).values() if s.type == "outbound-rtp")
        newest = sent[-1]
        fresh[:] = [(newest - i) & 0xFFFF for i in range(1, 6)]  # 20-100 ms old
        old = [(newest - i) & 0xFFFF for i in range(30, 35)]  # 0.6-0.7 s old
        forgotten = (newest - 500) & 0xFFFF  # never sent or long out of the 128-packet history
        await receiver._send_rtcp_nack(ssrc, sorted(fresh + old + [forgotten]))
        await poll.until(lambda: len(asked) >= 11, within=20.0)
        await asyncio.sleep(0.1)
        again = {seq for seq in fresh + old if sent.count(seq) > 1}
        assert again == set(fresh), (again, asked)
        assert [sent.count(seq) for seq in fresh] == [3, 2, 2, 2, 2]  # the first one twice
        assert dict(asked)[forgotten] is None
        assert all(0.3 < (dict(asked)[seq] or 0) < 1.0 for seq in old)
    finally:
        await pair.close()
