"""``appliance call …`` / ``appliance events`` against a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from appliance.cli import main
from appliance.server.lifecycle.services import services
from tests.support.server import ServerHandle

Capture = pytest.CaptureFixture[str]


def flags(srv: ServerHandle, user: str | None = None) -> list[str]:
    token = srv.user_token(user) if user else srv.server_token()
    return ["--url", srv.base_url, "--api-key", srv.api_key, "--token", token]


async def run(*argv: str) -> int:
    # main() runs its own event loop: give it a thread, as a shell would give it a process.
    return await asyncio.to_thread(main, list(argv))


async def test_create_get_update_end_delete(srv: ServerHandle, capsys: Capture) -> None:
    code = await run(
        "call", "create", "default", "door-1",
        "--member", "alice", "--member", "bob:admin",
        "--custom", "site=north gate", "--custom", "floor=2",
        "--starts-at", "2030-01-02T09:00:00Z", "--ring", "--json",
        *flags(srv, "door"),
    )  # fmt: skip
    assert code == 0
    created = json.loads(capsys.readouterr().out)
    assert created["created"] is True
    assert created["call"]["custom"] == {"site": "north gate", "floor": 2}
    assert created["call"]["starts_at"].startswith("2030-01-02T09:00:00")
    assert {m["user_id"]: m["role"] for m in created["members"]} == {
        "alice": "call_member",
        "bob": "admin",
    }
    assert created["call"]["session"]["ringing"] == ["alice", "bob"] or set(
        created["call"]["session"]["ringing"]
    ) == {"alice", "bob"}

    assert await run("call", "get", "default", "door-1", *flags(srv)) == 0
    text = capsys.readouterr().out
    assert text.startswith("call default:door-1 (exists)")
    assert "bob" in text and "admin" in text and '"floor": 2' in text
    assert "ringing: " in text

    assert (
        await run(
            "call", "update", "default", "door-1", "--custom", "floor=3", "--json", *flags(srv)
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["call"]["custom"] == {"floor": 3}

    assert await run("call", "end", "default", "door-1", *flags(srv)) == 0
    assert capsys.readouterr().out.strip() == "ended default:door-1"
    assert await run("call", "delete", "default", "door-1", "--hard", "--json", *flags(srv)) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "cid": "default:door-1"}
    assert await run("call", "get", "default", "door-1", *flags(srv)) == 1


async def test_create_without_id_makes_a_uuid(srv: ServerHandle, capsys: Capture) -> None:
    assert (
        await run("call", "create", "default", "--member", "alice", "--json", *flags(srv, "door"))
        == 0
    )
    call_id = json.loads(capsys.readouterr().out)["call"]["id"]
    assert len(call_id) == 36


async def test_create_with_a_team(srv: ServerHandle, capsys: Capture) -> None:
    argv = ["call", "create", "default", "ward-3", "--member", "alice", "--team", "north"]
    assert await run(*argv, "--created-by", "door", "--json", *flags(srv)) == 0
    assert json.loads(capsys.readouterr().out)["call"]["team"] == "north"
    assert await run("call", "get", "default", "ward-3", *flags(srv)) == 0
    assert "team: north" in capsys.readouterr().out


async def test_members_filter_sort_limit(srv: ServerHandle, capsys: Capture) -> None:
    await run(
        "call", "create", "default", "door-1", "--member", "alice:admin", "--member", "bob:admin",
        "--member", "carol", *flags(srv, "door"),
    )  # fmt: skip
    capsys.readouterr()
    code = await run(
        "call", "members", "default", "door-1", "--filter", "role=admin",
        "--sort", "-user_id", "--limit", "1", "--json", *flags(srv),
    )  # fmt: skip
    assert code == 0
    page = json.loads(capsys.readouterr().out)
    assert [m["user_id"] for m in page["members"]] == ["bob"]
    assert page["next"]
    code = await run(
        "call", "members", "default", "door-1", "--filter", "role=admin",
        "--sort", "-user_id", "--limit", "1", "--next", page["next"], *flags(srv),
    )  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["alice", "admin"]
    assert lines[1] == "(1 members)"


async def test_events_prints_json_lines(srv: ServerHandle, capsys: Capture) -> None:
    listener = asyncio.create_task(
        run("events", "--type", "call.ring", "--count", "1", *flags(srv, "alice"))
    )
    for _ in range(200):
        hub = services(srv.ctx).hub
        if any(c.user_id == "alice" for c in hub.connections.values()):
            break
        await asyncio.sleep(0.02)
    await run(
        "call", "create", "default", "door-1", "--member", "alice", "--ring", *flags(srv, "door")
    )
    assert await asyncio.wait_for(listener, 10) == 0
    lines = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    assert [(e["type"], e["call_cid"]) for e in lines] == [("call.ring", "default:door-1")]
    assert lines[0]["user"]["id"] == "door"


async def test_mistakes_are_one_line_and_non_zero(srv: ServerHandle, capsys: Capture) -> None:
    assert await run("call", "get", "default", "nowhere", *flags(srv)) == 1
    err = capsys.readouterr().err
    assert err == "appliance: NotFound: call default:nowhere not found [default:nowhere]\n"

    assert (
        await run("call", "members", "default", "nowhere", "--filter", "colour=red", *flags(srv))
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("appliance: InvalidRequest: filter_conditions.colour")
    assert err.count("\n") == 1

    assert await run("call", "create", "default", "x", "--member", ":admin", *flags(srv)) == 1
    assert capsys.readouterr().err.startswith("appliance: InvalidRequest: --member ':admin'")

    assert await run("call", "members", "default", "x", "--filter", "role", *flags(srv)) == 1
    assert "FIELD<op>VALUE" in capsys.readouterr().err

    assert await run("events", "--call", "door-1", *flags(srv)) == 1
    err = capsys.readouterr().err
    assert (
        err == "appliance: InvalidRequest: --call 'door-1': expected TYPE:ID, e.g. default:door-1\n"
    )

    assert await run("call", "get", "default", "x", "--url", srv.base_url) == 78
    err = capsys.readouterr().err
    assert "missing --api-key, --token" in err and err.count("\n") == 1


async def test_config_mints_a_server_token(
    srv: ServerHandle, tmp_path: Path, capsys: Capture
) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "api_key": srv.api_key,
                "api_secret": srv.api_secret,
                "base_url": srv.base_url,
                "state_dir": str(tmp_path / "cli-state"),
            }
        )
    )
    code = await run(
        "call",
        "create",
        "default",
        "c1",
        "--member",
        "alice",
        "--created-by",
        "door",
        "--json",
        "--config",
        str(config),
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["call"]["cid"] == "default:c1"
    code = await run(
        "call", "get", "default", "c1", "--json", "--config", str(config), "--as", "alice"
    )
    assert code == 0
    assert "join-call" in json.loads(capsys.readouterr().out)["own_capabilities"]


async def test_environment_and_the_real_entry_point(srv: ServerHandle) -> None:
    env = {
        **os.environ,
        "APPLIANCE_URL": srv.base_url,
        "APPLIANCE_API_KEY": srv.api_key,
        "APPLIANCE_TOKEN": srv.user_token("door"),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance", "call", "create", "default", "env-1", "--member", "alice",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("call default:env-1 (created)")


async def test_events_without_a_server_fails_in_one_line(capsys: Capture) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ.c2ln"
    code = await run(
        "events", "--connect-timeout", "0.5",
        "--url", f"http://127.0.0.1:{port}", "--api-key", "k", "--token", token,
    )  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("appliance: ServerUnavailable: ") and err.count("\n") == 1
