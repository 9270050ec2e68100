"""The link-watch policy: disconnected after a silent stall, restarts by the offerer only, repeated."""

from __future__ import annotations

from appliance.media.liveness import Action, LinkWatch


def run(watch: LinkWatch, steps: list[tuple[float, int, str]], offerer: bool) -> list[Action]:
    return [watch.tick(now, count, state, offerer) for now, count, state in steps]


def test_a_silent_connected_link_is_disconnected_after_the_stall_timeout() -> None:
    watch = LinkWatch(stall_timeout=3.0, restart_timeout=4.0)
    steps = [(0.0, 10, "connected"), (1.0, 20, "connected"), (3.5, 20, "connected"),
             (4.1, 20, "connected")]  # fmt: skip
    assert run(watch, steps, offerer=False) == [Action.NONE] * 3 + [Action.DISCONNECTED]


def test_the_offerer_restarts_at_once_then_every_restart_timeout_until_connected() -> None:
    watch = LinkWatch(stall_timeout=3.0, restart_timeout=4.0)
    steps = [
        (0.0, 5, "connected"),
        (4.0, 5, "connected"),  # silent for > 3 s
        (4.5, 5, "disconnected"),  # restart now
        (5.0, 5, "connecting"),
        (8.4, 5, "connecting"),  # < 4 s since the restart
        (8.6, 5, "connecting"),  # 4 s: again (the offer may have been lost with the link)
        (9.0, 9, "connected"),
        (9.5, 12, "connected"),
    ]
    assert run(watch, steps, offerer=True) == [
        Action.NONE, Action.DISCONNECTED, Action.RESTART, Action.NONE, Action.NONE,
        Action.RESTART, Action.NONE, Action.NONE,
    ]  # fmt: skip


def test_the_answerer_never_restarts_it_waits_for_the_offer() -> None:
    watch = LinkWatch(stall_timeout=3.0, restart_timeout=4.0)
    steps = [(0.0, 1, "connected"), (5.0, 1, "connected"), (6.0, 1, "disconnected"),
             (20.0, 1, "failed"), (30.0, 1, "connecting")]  # fmt: skip
    assert run(watch, steps, offerer=False) == [
        Action.NONE, Action.DISCONNECTED, Action.NONE, Action.NONE, Action.NONE,
    ]  # fmt: skip
