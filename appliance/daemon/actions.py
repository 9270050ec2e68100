"""What a button action (a press, a hold, ``appliance press``) does in each call state.
``toggle`` is the one-button intercom: call (or join, in auto_join) when idle, answer when
ringing, hang up otherwise. Every call-state change goes through the machine's verbs."""

from __future__ import annotations

import logging

from appliance.daemon.config import Action, Mode
from appliance.daemon.ports import CallState, Machine

log = logging.getLogger("appliance.daemon.machine")


def act(m: Machine, action: Action, source: str) -> None:
    state = m.call_state
    if action is Action.TOGGLE:
        if state is CallState.IDLE:
            action = Action.JOIN if m.cfg.mode is Mode.AUTO_JOIN else Action.CALL
        elif state is CallState.RINGING:
            action = Action.ANSWER
        else:
            action = Action.HANGUP
    log.info("Daemon(%s) %s: %s in %s", m.me, source, action.value, state.value)
    m.indications.clear_missed()
    if action is Action.CALL and state is CallState.IDLE:
        m.place_call()
    elif action is Action.ANSWER and state is CallState.RINGING:
        m.answer(auto=False)
    elif action in (Action.REJECT, Action.HANGUP) and state is CallState.RINGING:
        m.call_task(m.reject("decline"))
    elif action is Action.HANGUP and state in (
        CallState.CALLING,
        CallState.CONNECTING,
        CallState.IN_CALL,
    ):
        m.call_task(m.hang_up("button"))
    elif action is Action.PRIVACY:
        m.set_muted(not m.muted, source)
    elif action is Action.JOIN:
        m.join_now()
    else:
        log.info("Daemon(%s) %s ignored in %s", m.me, action.value, state.value)
    m.refresh_leds()
