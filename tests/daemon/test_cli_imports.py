"""`appliance press` / `appliance status` answer in a blink: building the parser and talking to a
running daemon's control socket imports neither the media stack nor the server nor the HTTP
client. Checked on the modules a real CLI process has loaded, never on time."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from appliance.daemon.config import load_config
from appliance.daemon.service import running
from tests.support.server import ServerHandle

pytestmark = [pytest.mark.timeout(120)]

# Everything the control commands must not pay for (the daemon, the server and `appliance call`
# import them; `press` and `status` only speak JSON over a Unix socket).
HEAVY = (
    "aiortc",
    "av",
    "numpy",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "httpx",
    "websockets",
    "jwt",
)

PROBE = """
import json, sys
from appliance.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
heavy = sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)
print("PROBE " + json.dumps({"codes": codes, "heavy": heavy}))
"""


def probe(*commands: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(list(commands)), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    assert lines, done.stdout + done.stderr
    result: dict[str, object] = json.loads(lines[-1][len("PROBE ") :])
    result["stdout"] = done.stdout
    return result


def test_building_the_parser_imports_no_heavy_stack() -> None:
    code = (
        "import json, sys; from appliance.cli import build_parser; build_parser(); "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_status_help_imports_no_heavy_stack() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "appliance", "status", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "--state-dir" in done.stdout
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "appliance.cli" in imported  # (modules loaded by importlib.import_module are not listed)
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


async def test_press_and_status_against_a_running_daemon_import_no_heavy_stack(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    data = {
        "device": {"id": "door-1"},
        "server": {"embedded": {"port": 0, "users": [{"id": "alice"}]}},
        "call": {"members": ["alice"]},
        "buttons": [{"name": "call", "pin": 17, "press": "call"}],
        "pin_factory": "mock",
        "state_dir": str(state),
        "media": {
            "camera": {"source": "none"},
            "audio": {"capture_device": "null", "playback_device": "null"},
        },
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    async with running(load_config(path)) as run:
        await asyncio.wait_for(run.daemon.wait_online(), 30)
        by_state_dir = await asyncio.to_thread(
            probe,
            ["status", "--json", "--state-dir", str(state)],
            ["press", "call", "--state-dir", str(state)],
        )
        assert by_state_dir["codes"] == [0, 0], by_state_dir
        assert by_state_dir["heavy"] == [], by_state_dir
        first = json.loads(str(by_state_dir["stdout"]).splitlines()[0])
        assert first["device"] == "door-1" and first["server_link"] == "online"
        assert "pressed call: calling" in str(by_state_dir["stdout"])

        # --config reads the device YAML (pydantic, YAML) to find the socket: still no media,
        # server or HTTP client.
        by_config = await asyncio.to_thread(probe, ["status", "--json", "--config", str(path)])
        assert by_config["codes"] == [0] and by_config["heavy"] == [], by_config
        assert json.loads(str(by_config["stdout"]).splitlines()[0])["call_state"] == "calling"


REMOTE_DAEMON = """
import asyncio, json, sys
from appliance.cli import build_parser
from appliance.daemon.config import load_config
from appliance.daemon.service import running

async def main() -> None:
    build_parser()
    async with running(load_config(sys.argv[1])) as run:
        await asyncio.wait_for(run.daemon.wait_online(), 30)
        print("PROBE " + json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))

asyncio.run(main())
"""


async def test_a_daemon_on_a_remote_server_does_not_import_the_server(
    server: ServerHandle, tmp_path: Path
) -> None:
    """`appliance run` against a separate server: online without fastapi, Starlette, uvicorn
    or SQLAlchemy in the process (~30 MB of RSS and a third of the start-up time)."""
    data = {
        "device": {"id": "door-1"},
        "server": {
            "url": server.base_url,
            "api_key": server.api_key,
            "token": server.user_token("door-1"),
        },
        "call": {"members": ["alice"]},
        "pin_factory": "mock",
        "state_dir": str(tmp_path / "state"),
        "media": {
            "camera": {"source": "none"},
            "audio": {"capture_device": "null", "playback_device": "null"},
        },
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    server_stack = ["fastapi", "starlette", "uvicorn", "sqlalchemy", "aiosqlite"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        REMOTE_DAEMON,
        str(path),
        json.dumps(server_stack),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()[-2000:]
    lines = [line for line in out.decode().splitlines() if line.startswith("PROBE ")]
    assert lines and json.loads(lines[-1][len("PROBE ") :]) == [], out.decode() + err.decode()
