"""The bitrate controller: receiver feedback sequences in, the source's bitrate sequence out.

A real ``test`` source (not started: the controller only reads and sets its bitrate) and a manual
clock; what the fanout would report as sent is fed in as access units of a known size.
"""

from __future__ import annotations

import itertools

from appliance.clock import ManualClock
from appliance.media.congestion import BitrateController
from appliance.media.sources.test import TestSource

FPS = 30


def setup(bitrate: int = 2_000_000) -> tuple[TestSource, BitrateController, ManualClock]:
    clock = ManualClock()
    source = TestSource(bitrate=bitrate)
    return source, BitrateController(source, clock=clock), clock


def send(controller: BitrateController, clock: ManualClock, bps: float, seconds: float) -> None:
    """The source sends ``bps`` for ``seconds`` (one access unit per frame period)."""
    for _ in range(round(seconds * FPS)):
        clock.advance(1 / FPS)
        controller.sent(round(bps / 8 / FPS))


def test_a_remb_below_what_is_sent_drops_the_bitrate_at_once_and_it_climbs_back_slowly() -> None:
    source, controller, clock = setup()
    send(controller, clock, 2_000_000, 1.1)
    controller.feedback("hq", "remb", 900_000)
    assert source.bitrate == 765_000  # 0.85 x REMB, in one step
    rates = []
    for _ in range(8):
        send(controller, clock, source.bitrate, 1.0)
        controller.feedback("hq", "remb", 900_000)
        rates.append(source.bitrate)
    # held for 3 s after the drop, then at most +100 kbit/s a second, never above the REMB
    assert rates[:2] == [765_000, 765_000] and rates[-3:] == [900_000] * 3
    assert max(rates) == 900_000
    assert all(0 <= b - a <= 100_000 for a, b in itertools.pairwise(rates))
    controller.feedback("hq", "remb", 3_000_000)
    send(controller, clock, source.bitrate, 1.0)
    controller.feedback("hq", "remb", 3_000_000)
    assert source.bitrate == 1_000_000
    assert (controller.counts["lowered"], controller.counts["raised"]) == (1, 3)


def test_heavy_loss_drops_to_what_arrives_once_not_again_for_the_reports_of_the_old_rate() -> None:
    source, controller, clock = setup()
    send(controller, clock, 2_000_000, 1.1)
    controller.feedback("hq", "report", 0.55)
    assert source.bitrate == 2_000_000  # one report alone may be a flap
    send(controller, clock, 2_000_000, 1.0)
    controller.feedback("hq", "report", 0.5)
    assert abs(source.bitrate - 850_000) < 1_000  # 0.85 x 2 Mbit/s x (1 - 50 %)
    first = source.bitrate
    send(controller, clock, 850_000, 0.6)
    controller.feedback("hq", "report", 0.4)  # covers the second before: mostly the old rate
    assert source.bitrate == first
    send(controller, clock, 850_000, 1.0)
    controller.feedback("hq", "report", 0.0)
    assert source.bitrate == first  # held after a drop
    send(controller, clock, 850_000, 2.0)
    controller.feedback("hq", "report", 0.0)
    assert source.bitrate == first + 100_000  # then additive


def test_a_flap_is_not_congestion_one_lossy_report_and_one_burst_of_nacks() -> None:
    source, controller, clock = setup(1_000_000)
    send(controller, clock, 1_000_000, 1.1)
    controller.feedback("hq", "report", 0.0)
    for seq in range(100):  # after a 1 s outage: everything it lost, in one NACK
        controller.nacked("hq", seq)
    send(controller, clock, 1_000_000, 0.5)
    controller.feedback("hq", "report", 0.6)  # the report covering the outage
    send(controller, clock, 1_000_000, 1.0)
    controller.feedback("hq", "report", 0.0)
    assert source.bitrate == 1_000_000 and controller.counts["lowered"] == 0


def test_random_loss_of_a_few_percent_is_not_congestion() -> None:
    source, controller, clock = setup(1_000_000)
    for _ in range(10):
        send(controller, clock, 1_000_000, 1.0)
        controller.feedback("hq", "report", 0.05)
        controller.feedback("hq", "remb", 1_400_000)
    assert source.bitrate == 1_000_000 and controller.counts["lowered"] == 0


def test_a_rising_round_trip_drops_the_bitrate_and_its_smoothed_decay_does_not() -> None:
    source, controller, clock = setup(1_000_000)
    send(controller, clock, 1_000_000, 1.1)
    controller.feedback("hq", "rtt", 0.01)
    controller.feedback("hq", "rtt", 0.12)
    assert source.bitrate == 1_000_000  # within the margin
    send(controller, clock, 1_000_000, 1.1)
    controller.feedback("hq", "rtt", 0.25)  # a queue building up
    assert source.bitrate == 850_000
    for rtt in (0.22, 0.19, 0.17):  # aiortc's smoothed estimate on its way down
        send(controller, clock, 850_000, 1.2)
        controller.feedback("hq", "rtt", rtt)
    assert source.bitrate >= 850_000 and controller.counts["lowered"] == 1


def test_an_encoder_that_undershoots_is_not_driven_down_by_an_estimate_of_what_arrives() -> None:
    source, controller, clock = setup(1_000_000)
    for _ in range(5):
        send(controller, clock, 300_000, 1.0)  # a still picture: far below the target
        controller.feedback("hq", "remb", 450_000)  # aiortc's estimate: 1.5 x what arrives
    assert source.bitrate == 1_000_000 and controller.counts["lowered"] == 0


def test_the_worst_receiver_decides_and_a_peer_that_left_no_longer_counts() -> None:
    source, controller, clock = setup(1_000_000)
    send(controller, clock, 1_000_000, 1.1)
    controller.feedback("desk", "remb", 2_000_000)
    controller.feedback("phone", "remb", 500_000)
    assert source.bitrate == 425_000
    controller.forget("phone")
    assert controller.remb == 2_000_000


def test_a_flood_of_nacks_drops_the_bitrate_before_any_receiver_report() -> None:
    source, controller, clock = setup()
    send(controller, clock, 2_000_000, 1.1)  # 7 packets a frame, 105 in half a second
    for seq in range(40):  # 40 of them NACKed over 0.4 s, each twice
        controller.nacked("hq", seq)
        controller.nacked("hq", seq)
        clock.advance(0.01)
    assert source.bitrate < 1_500_000
    assert controller.last_reason.startswith("NACKs for")


def test_nacks_of_random_loss_do_not_drop_the_bitrate() -> None:
    source, controller, clock = setup(1_000_000)
    seq = 0
    for _ in range(40):  # 20 s; 5 % of ~55 packets per half second, each NACKed three times
        send(controller, clock, 1_000_000, 0.5)
        for _ in range(3):
            for nack in range(seq, seq + 3):
                controller.nacked("hq", nack)
        seq += 3
    assert source.bitrate == 1_000_000 and controller.counts["lowered"] == 0
