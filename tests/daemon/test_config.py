"""Device config: the shipped examples are valid; every mistake is one line with file:line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.daemon.config import Action, Mode, load_config
from appliance.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["intercom", "bedside", "field"])
def test_shipped_configs_are_valid(name: str, tmp_path: Path) -> None:
    cfg = load_config(ROOT / "config" / f"{name}.yaml", state_dir=tmp_path)
    assert cfg.device.id and cfg.buttons
    assert cfg.mode in (Mode.CALL, Mode.ANSWER, Mode.AUTO_JOIN)


def test_intercom_is_the_laptop_default(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "config" / "intercom.yaml", state_dir=tmp_path)
    assert cfg.server.embedded is not None and cfg.pin_factory == "mock"
    assert cfg.media.camera.source == "test"
    assert cfg.call_id == "door-entrance"
    assert cfg.buttons[0].press is Action.TOGGLE


def test_custom_device_publishes_unlock_roles_with_a_relay(tmp_path: Path) -> None:
    """The console shows Unlock only to members whose call role is in ``unlock_roles``."""
    door = load_config(ROOT / "config" / "intercom.yaml", state_dir=tmp_path)
    assert door.relay is not None
    assert door.device_custom() == {
        "relay": True,
        "unlock_roles": ["admin"],
        "video": "send-only",
        "model": "intercom",
        "mode": "call",
    }
    bed = load_config(ROOT / "config" / "bedside.yaml", state_dir=tmp_path)
    assert bed.device_custom()["relay"] is False and "unlock_roles" not in bed.device_custom()


GOOD = """\
device: {id: door-1}
server: embedded
call:
  members: [alice]
buttons:
  - name: call
    pin: 17
    press: call
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("edit", "line", "needle"),
    [
        (("pin: 17", "pin: seventeen"), 7, "buttons[0].pin: 'seventeen' is not a GPIO pin"),
        (("press: call", "press: ring"), 8, "buttons[0].press: 'ring'"),
        (("    pin: 17", "    pin: 17\n    colour: red"), 8, "buttons[0].colour: unknown key"),
        (("    pin: 17", "    pin: 17\n    pin: 18"), 8, "duplicate key 'pin'"),
        (("server: embedded", "server: {url: ftp://x, api_key: k, token: t}"), 2, "server.url"),
        (("server: embedded", "server: {url: http://x, api_key: k}"), 2, "exactly one of token"),
        (("device: {id: door-1}", "device: {id: 'door 1'}"), 1, "device.id: device ids are 1-64"),
        (
            ("server: embedded", "server: {embedded: {users: [{id: 'bad user'}]}}"),
            2,
            "server.embedded.users[0].id: user ids are 1-64",
        ),
        (("call:", "mode: auto_join\ncall:"), 4, "auto_join needs a fixed call id"),
        (("  members: [alice]", "  members: [alice]\n  id: '{room}'"), 5, "unknown placeholder"),
    ],
)
def test_mistakes_name_file_line_and_key(
    tmp_path: Path, edit: tuple[str, str], line: int, needle: str
) -> None:
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as info:
        load_config(path, state_dir=tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert needle in message
    assert "\n" not in message


def test_unknown_key_hint_lists_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "relay: {pin: 23, pulse: 3}\n")
    with pytest.raises(ConfigError, match=r"relay.pulse: unknown key \(hint: known keys: pin, "):
        load_config(path, state_dir=tmp_path)


def test_missing_referenced_file(tmp_path: Path) -> None:
    text = GOOD.replace("server: embedded", "server: {url: http://x, api_key: k, token_file: t}")
    with pytest.raises(ConfigError, match=r":2: server.token_file: file .* does not exist"):
        load_config(write(tmp_path, text), state_dir=tmp_path)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", ["check", "run"])
def test_bad_config_exits_78_with_one_line(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, GOOD.replace("pin: 17", "pin: seventeen"))
    result = run_cli(command, "--config", str(path))
    assert result.returncode == 78
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"{path}:7: buttons[0].pin" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_ok(tmp_path: Path) -> None:
    result = run_cli("check", "--config", str(write(tmp_path, GOOD)))
    assert result.returncode == 0 and "ok" in result.stdout
