"""What the daemon shows: the status LED's state, and ``appliance status`` (the daemon's state
as one JSON-able dict, the control socket's ``status`` answer)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from appliance.daemon.ports import CallState, LinkState, Machine


class StatusSource(Machine, Protocol):
    """The machine plus what only the status reads."""

    @property
    def gate_open(self) -> bool: ...

    @property
    def first_packet_at(self) -> float | None: ...

    @property
    def last_error(self) -> str | None: ...

    @property
    def transitions(self) -> list[tuple[float, str, str, str]]: ...

    @property
    def audio_stats(self) -> Callable[[], dict[str, Any]] | None: ...


def led_state(daemon: StatusSource, *, muted_shown: bool) -> str:
    """What the status LED shows (one of ``hardware.config.LED_STATES``)."""
    state = daemon.call_state
    if state is CallState.IN_CALL:
        return "muted" if muted_shown else "in_call"
    if state is not CallState.IDLE and state is not CallState.ENDING:
        return state.value
    if daemon.indications.error:
        return "error"
    if daemon.link_state is LinkState.OFFLINE:
        return "offline"
    return "missed" if daemon.indications.missed_at is not None else "idle"


def status(daemon: StatusSource) -> dict[str, Any]:
    panel = daemon.panel.snapshot()
    joined, media = daemon.joined, daemon.media
    if media is not None:
        audio: dict[str, Any] | None = media.stats()
    else:
        audio = daemon.audio_stats() if daemon.audio_stats is not None else None
    return {
        "device": daemon.me,
        "mode": daemon.cfg.mode.value,
        "call_state": daemon.call_state.value,
        "server_link": daemon.link_state.value,
        "call_cid": daemon.cid,
        "caller": daemon.caller,
        "muted": daemon.muted,
        "media_gate_open": daemon.gate_open,
        "first_packet_at": daemon.first_packet_at,
        "leds": panel.get("leds"),
        "relay": panel.get("relay"),
        "buttons": panel.get("buttons"),
        "simulated_panel": panel.get("simulated"),
        "participants": sorted(set(joined.participants.values())) if joined else [],
        "unlocks": daemon.unlocks[-5:],
        "audio": audio,
        "last_error": daemon.last_error,
        "transitions": [
            {"at": at, "from": old, "to": new, "reason": why}
            for at, old, new, why in daemon.transitions[-10:]
        ],
    }
