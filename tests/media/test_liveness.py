"""The link-watch policy: disconnected after a silent stall, restarts by the offerer only, repeated."""

from __future__ import annotations

from appliance.media.liveness import Action, LinkWatch

NONE, DISCONNECTED, RESTART = Action.NONE, Action.DISCONNECTED, Action.RESTART


def run(watch: LinkWatch, steps: list[tuple[float, int, str]], offerer: bool) -> list[Action]:
    return [watch.tick(now, count, state, offerer) for now, count, state in steps]


def test_a_silent_connected_link_is_disconnected_after_the_stall_timeout() -> None:
    watch = LinkWatch(stall_timeout=3.0)
    steps = [(0.0, 10, "connected"), (1.0, 20, "connected"), (3.5, 20, "connected")]
    steps.append((4.1, 20, "connected"))
    assert run(watch, steps, offerer=False) == [NONE, NONE, NONE, DISCONNECTED]


def test_the_offerer_restarts_at_once_then_every_restart_timeout_until_connected() -> None:
    watch = LinkWatch(stall_timeout=3.0, restart_timeout=2.0)
    steps = [
        (0.0, 5, "connected"),
        (4.0, 5, "connected"),  # silent for > 3 s
        (4.5, 5, "disconnected"),  # restart now
        (5.0, 0, "connecting"),  # a fresh connection: its own count
        (6.4, 0, "connecting"),  # < 2 s since the restart
        (6.6, 0, "connecting"),  # 2 s and nothing heard: again (lost with the link?)
        (9.0, 9, "connected"),
        (9.5, 12, "connected"),
    ]
    expected = [NONE, DISCONNECTED, RESTART, NONE, NONE, RESTART, NONE, NONE]
    assert run(watch, steps, offerer=True) == expected


def test_an_attempt_waits_longer_for_its_answer_and_longer_still_while_it_progresses() -> None:
    watch = LinkWatch(stall_timeout=3.0, restart_timeout=2.0, connect_timeout=15.0)
    assert watch.tick(0.0, 0, "connecting", True, answered=False) is NONE
    assert watch.tick(3.9, 0, "connecting", True, answered=False) is NONE  # < 2 x 2 s
    assert watch.tick(4.0, 0, "connecting", True, answered=False) is RESTART
    assert watch.tick(5.0, 3, "connecting", True) is NONE  # the far end answers checks: progress
    assert watch.tick(18.9, 40, "connecting", True) is NONE
    assert watch.tick(19.0, 41, "connecting", True) is RESTART  # connect_timeout


def test_the_answerer_never_restarts_it_waits_for_the_offer() -> None:
    watch = LinkWatch(stall_timeout=3.0, restart_timeout=2.0)
    steps = [(0.0, 1, "connected"), (5.0, 1, "connected"), (6.0, 1, "disconnected")]
    steps += [(20.0, 1, "failed"), (30.0, 1, "connecting")]
    assert run(watch, steps, offerer=False) == [NONE, DISCONNECTED, NONE, NONE, NONE]
