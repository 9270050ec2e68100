"""The README's client example, extracted from README.md and run as written against a real server."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from tests.client.conftest import USERS
from tests.support.server import running_server

README = Path(__file__).resolve().parents[2] / "README.md"


def client_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = re.search(r"<!-- section:client -->(.*?)<!-- /section:client -->", text, re.S)
    assert section is not None, "README.md has no client section"
    block = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert block is not None, "the client section has no python example"
    return block.group(1)


async def test_readme_example_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(client_example(), encoding="utf-8")
    async with running_server(tmp_path / "server", users=USERS) as srv:
        env = {
            **os.environ,
            "APPLIANCE_URL": srv.base_url,
            "APPLIANCE_API_KEY": srv.api_key,
            "APPLIANCE_TOKEN": srv.user_token("door"),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        "created default:door-1 True",
        "color blue ringing ['alice', 'bob']",
        "admins ['bob', 'door']",
        "call.ended default:door-1",
    ]
