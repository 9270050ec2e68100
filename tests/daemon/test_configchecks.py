"""Cross-key and referenced-file checks of a device config (`appliance check` / `appliance run`):
one line with file:line and the key, exit 78."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from appliance.cli import main
from tests.daemon.conftest import BASE

Capture = pytest.CaptureFixture[str]

REMOTE = """
device: {id: field-7, name: Pump 7}
server:
  url: URL
  api_key: appliance
  token_file: device.token
call: {type: default, id: "site-{device}"}
mode: auto_join
"""


def check(tmp_path: Path, text: str, capsys: Capture) -> tuple[int, str]:
    config = tmp_path / "device.yaml"
    config.write_text(text)
    code = main(["check", "--config", str(config)])
    return code, capsys.readouterr().err


def remote(tmp_path: Path, token: str, url: str = "http://127.0.0.1:3040") -> str:
    (tmp_path / "device.token").write_text(token + "\n")
    return REMOTE.replace("URL", url)


def token_for(user_id: str) -> str:
    return jwt.encode({"user_id": user_id}, "s" * 32, algorithm="HS256")


def test_a_pin_used_twice(tmp_path: Path, capsys: Capture) -> None:
    text = BASE.replace("status: {pin: 27}", "status: {pin: 18}")
    code, err = check(tmp_path, text, capsys)
    assert code == 78
    assert err == (
        f"appliance: config error: {tmp_path / 'device.yaml'}:13: leds.status.pin: pin GPIO18 is "
        "already used by buttons[1].pin (hint: each button, LED and relay needs its own pin)\n"
    )
    # `appliance run` refuses it the same way, before starting anything
    assert main(["run", "--config", str(tmp_path / "device.yaml")]) == 78
    assert "pin GPIO18 is already used by buttons[1].pin" in capsys.readouterr().err


def test_a_good_remote_config_passes(tmp_path: Path, capsys: Capture) -> None:
    code, _ = check(tmp_path, remote(tmp_path, token_for("field-7")), capsys)
    assert code == 0


@pytest.mark.parametrize(
    ("token", "url", "message"),
    [
        ("garbage", "http://127.0.0.1:3040", ":6: server.token_file: the token is not a JWT"),
        (token_for("someone"), "http://127.0.0.1:3040", "is for user 'someone', not for device.id"),
        (
            token_for("field-7"),
            "http://127.0.0.1:99999",
            ":4: server.url: 'http://127.0.0.1:99999'",
        ),
    ],
)
def test_remote_server_mistakes(
    tmp_path: Path, capsys: Capture, token: str, url: str, message: str
) -> None:
    code, err = check(tmp_path, remote(tmp_path, token, url), capsys)
    assert code == 78
    assert message in err and err.count("\n") == 1
