"""``appliance serve | token | users``: real commands, real processes for ``serve``."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest

from appliance.cli import EX_CONFIG, main
from tests.support.poll import until
from tests.support.server import running_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path):
    cfg = tmp_path / "server.yaml"
    cfg.write_text(
        "api_key: cli-key\napi_secret: cli-secret-long-enough-for-hs256-signing\n"
        "state_dir: state\nport: 3999\nbase_url: https://door.example.org\n"
        "users:\n  - {id: alice, name: Alice}\n"
    )
    return cfg


def test_token_and_link(config, capsys) -> None:
    assert main(["token", "--config", str(config), "--user", "alice", "--ttl", "60"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, "cli-secret-long-enough-for-hs256-signing", algorithms=["HS256"])
    assert claims["user_id"] == "alice" and claims["exp"] - claims["iat"] == 60
    assert main(["users", "add", "bob", "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "user bob saved"
    assert main(["token", "--config", str(config), "--user", "bob", "--link"]) == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith("https://door.example.org/?api_key=cli-key&token=")
    assert main(["token", "--config", str(config), "--server"]) == 0
    server = capsys.readouterr().out.strip()
    assert (
        jwt.decode(server, "cli-secret-long-enough-for-hs256-signing", algorithms=["HS256"]) == {}
    )


def test_no_token_for_a_user_nobody_created(config, capsys) -> None:
    """The server would refuse it (401): the CLI says so, naming the command that fixes it."""
    assert main(["token", "--config", str(config), "--user", "carol"]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        "user carol does not exist" in captured.err and "appliance users add carol" in captured.err
    )
    assert "Traceback" not in captured.err


def test_users_add_and_list(config, capsys) -> None:
    args = ["users", "add", "door-1", "--config", str(config), "--name", "Front door"]
    args += ["--team", "blue", "--custom", 'device={"relay": true}', "--custom", "floor=2"]
    assert main(args) == 0
    assert main(["users", "list", "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out.splitlines()[-1]
    users = {u["id"]: u for u in json.loads(out)}
    assert users["door-1"]["custom"] == {"device": {"relay": True}, "floor": 2}
    assert users["door-1"]["teams"] == ["blue"] and users["door-1"]["name"] == "Front door"


def test_config_mistake_is_one_line_and_exit_78(tmp_path) -> None:
    cfg = tmp_path / "server.yaml"
    cfg.write_text("api_key: k\nprot: 1\n")
    run = subprocess.run(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == EX_CONFIG
    assert "Traceback" not in run.stderr
    assert f"{cfg}:2: prot: unknown key" in run.stderr


@pytest.mark.e2e
async def test_serve_survives_kill_9(tmp_path) -> None:
    async with running_server(tmp_path, users=["alice"], subprocess=True) as srv:
        async with srv.client() as http:
            r = await http.post(
                "/api/v2/video/call/default/door-1",
                json={"data": {"created_by_id": "alice", "custom": {"n": 1}}},
            )
            assert r.status_code == 200
        await srv.kill()
        await srv.start()
        async with srv.client("alice") as http:
            r = await http.get("/api/v2/video/call/default/door-1")
        assert r.status_code == 200 and r.json()["call"]["custom"] == {"n": 1}


def test_user_mistakes_are_one_line(config, capsys) -> None:
    for args in (["users", "add", "bad id!"], ["users", "add", "x", "--role", "king"]):
        assert main([*args, "--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("appliance: InvalidRequest: ")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["serve", "--port", "99999"], "99999 is not a port (0..65535)"),
        (["serve", "--port", "http"], "'http' is not a port number"),
        (["token", "--user", "alice", "--ttl", "-5"], "-5 must be a positive number of seconds"),
        (["token", "--user", "alice", "--ttl", "0"], "0 must be a positive number of seconds"),
    ],
)
def test_bad_port_and_ttl_are_one_line_usage_errors(config, capsys, args, problem) -> None:
    """A port above 65535 would silently bind another port; a TTL <= 0 mints a dead token."""
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--config", str(config)])
    assert exit_.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and "Traceback" not in out.err
    assert out.err.strip().splitlines()[-1].endswith(problem)


def test_serve_speaks_the_systemd_notify_protocol(tmp_path) -> None:
    """READY=1 (with a STATUS) once it listens, WATCHDOG=1 while healthy, STOPPING=1 on SIGTERM."""
    import os
    import signal
    import socket as socketlib

    from tests.support.notify import NotifyListener

    with socketlib.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "server.yaml"
    cfg.write_text(
        "api_key: k\napi_secret: a-secret-long-enough-for-hs256-signing!\n"
        f"state_dir: {tmp_path / 'state'}\nhost: 127.0.0.1\nport: {port}\n"
    )
    notify = NotifyListener(tmp_path / "notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = notify.wait(lambda m: m.startswith("READY=1"), 60)
        assert f"STATUS=serving on http://127.0.0.1:{port}" in ready
        notify.wait(lambda m: m == "WATCHDOG=1", 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        notify.wait(lambda m: m == "STOPPING=1", 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def test_serve_on_a_busy_port_exits_non_zero_after_no_ready(tmp_path) -> None:
    import os
    import socket as socketlib

    from tests.support.notify import NotifyListener

    with socketlib.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "server.yaml"
        cfg.write_text(
            "api_key: k\napi_secret: a-secret-long-enough-for-hs256-signing!\n"
            f"state_dir: {tmp_path / 'state'}\nhost: 127.0.0.1\nport: {port}\n"
        )
        notify = NotifyListener(tmp_path / "notify")
        env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
        try:
            run = subprocess.run(
                [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            notify.close()
    assert run.returncode != 0
    assert not any(m.startswith("READY=1") for m in notify.messages)
    assert "Traceback" not in run.stderr


def test_state_dir_from_systemd_when_the_config_names_none(tmp_path, monkeypatch, capsys) -> None:
    """Installed under /etc, the shipped server.yaml must not put its state next to itself
    (read-only under ProtectSystem=strict): ``$STATE_DIRECTORY`` is the default, as for the
    daemon; the secret generated there is the one ``appliance token`` signs with."""
    etc = tmp_path / "etc"
    etc.mkdir()
    shipped = (ROOT / "config" / "server.yaml").read_text()
    (etc / "server.yaml").write_text(shipped)
    (etc / "call-types.yaml").write_text((ROOT / "config" / "call-types.yaml").read_text())
    etc.chmod(0o555)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "var-lib"))
    monkeypatch.delenv("APPLIANCE_API_SECRET", raising=False)
    try:
        assert main(["token", "--config", str(etc / "server.yaml"), "--server"]) == 0
    finally:
        etc.chmod(0o755)
    token = capsys.readouterr().out.strip()
    secret = (tmp_path / "var-lib" / "api_secret").read_text().strip()
    assert jwt.decode(token, secret, algorithms=["HS256"]) == {}
    assert not (tmp_path / "state").exists()


def test_unwritable_state_dir_is_exit_78(tmp_path) -> None:
    cfg = tmp_path / "server.yaml"
    cfg.write_text("api_key: k\napi_secret: s\nstate_dir: /proc/appliance-state\n")
    run = subprocess.run(
        [sys.executable, "-m", "appliance", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == EX_CONFIG, run.stderr
    assert "state_dir" in run.stderr and "Traceback" not in run.stderr


async def test_serve_leaves_its_startup_heap_out_of_garbage_collection(tmp_path) -> None:
    """A full collection walked the ~135,000 objects of a started server (a pause of 50-450 ms
    inside a ring's fan-out on a loaded machine); `appliance serve` freezes them once serving."""
    frozen: list[float] = []

    # uvicorn accepts before the heap is frozen (serve freezes it right after its first health
    # refresh), so a /metrics that arrives in between sees 0: ask until the freeze has happened.
    async def read(http: Any) -> bool:
        text = (await http.get("/metrics")).text
        frozen[:] = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("appliance_gc_frozen_objects ")
        ]
        return bool(frozen) and frozen[0] > 0

    async with running_server(tmp_path, users=["alice"], subprocess=True) as srv:
        async with srv.client() as http:
            with contextlib.suppress(AssertionError):  # the assertion below says what was seen
                await until(lambda: read(http), within=30, every=0.1)
    assert frozen and frozen[0] > 50_000, frozen
