"""`appliance run` as systemd runs it: READY=1 through a test NOTIFY_SOCKET once connected,
`appliance status --json` / `appliance press` through the control socket, STATUS= lines,
STOPPING=1 and exit 0 on SIGTERM. The config is the shipped intercom.yaml (what `make run`
starts), on a free port and a private state dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.notify import NotifyListener

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_run_ready_status_press_stop(tmp_path: Path) -> None:
    text = (ROOT / "config" / "intercom.yaml").read_text()
    text = text.replace("port: 3040 ", "port: 0    ").replace(
        "call_types: call-types.yaml", f"call_types: {ROOT / 'config' / 'call-types.yaml'}"
    )
    state = tmp_path / "state"
    config = tmp_path / "intercom.yaml"
    config.write_text(text + f"\nstate_dir: {state}\n")
    notify = NotifyListener(tmp_path / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        ready = notify.wait(lambda m: m.startswith("READY=1"))
        assert "STATUS=idle, server online" in ready
        assert notify.messages[0].startswith("STATUS=")  # progress before READY

        status = json.loads(cli(state, "status", "--json").stdout)
        assert status["call_state"] == "idle" and status["server_link"] == "online"
        assert status["leds"]["status"] == "idle" and status["simulated_panel"] is True

        pressed = cli(state, "press", "call")
        assert pressed.returncode == 0, pressed.stderr
        status = json.loads(cli(state, "status", "--json").stdout)
        assert status["call_state"] == "calling"
        assert status["call_cid"] == "default:door-entrance"

        wrong = cli(state, "press", "nope")
        assert wrong.returncode == 1 and "no button 'nope'" in wrong.stderr
        assert "Traceback" not in wrong.stderr

        # the health-gated watchdog pings at half of WATCHDOG_USEC
        notify.wait(lambda m: m == "WATCHDOG=1", 10)
        notify.wait(lambda m: "calling" in m and m.startswith("STATUS="), 10)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        notify.wait(lambda m: m == "STOPPING=1", 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        notify.close()
    banner = (tmp_path / "daemon.log").read_text()
    assert "console:" in banner and "log in as alice: http://127.0.0.1:" in banner
    assert "appliance press call" in banner
    assert not (state / "control.sock").exists()
