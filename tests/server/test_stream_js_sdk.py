"""Stream's JavaScript client SDK (``@stream-io/video-client``) drives a real ``appliance serve``.

The SDK and ``ws`` are pinned in ``tests/js/package-lock.json`` and installed by ``make test``
(``npm ci`` in ``tests/js``). ``tests/js/stream_sdk_flow.mjs`` runs Stream's documented client
flow, its scenarios concurrently in one Node process: connectUser (user details saved),
getOrCreate with members and custom data, update, get (dates parse), queryMembers, a ring
accepted by a second client, a ring rejected with the SDK's own reason, a ring nobody answers
(missed for everyone, no failed SDK request, ring_state polled), a socket idle for 90 s that
still hears an event without reconnecting, and tokens refreshed through ``tokenProvider``.

The idle case is the suite's floor: it runs with the server's default health interval and
the SDK's own, unmodified timers (25 s ping, 35 s watchdog) — shortening either would no longer
show that the two fit together.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from appliance.server.settings import ServerSettings
from tests.support.server import running_server

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "stream_sdk_flow.mjs"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
IDLE_SECONDS = 90
DEADLINE_SECONDS = IDLE_SECONDS + 150


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: make test installs it (Debian package nodejs)")
    if not (JS_DIR / "node_modules" / "@stream-io" / "video-client").is_dir():
        pytest.fail(f"the SDK is not installed: run `make test` (npm ci in {JS_DIR})")
    return node


async def test_stream_js_sdk_flow(tmp_path: Path) -> None:
    node = _node()
    async with running_server(
        tmp_path, users=USERS, subprocess=True, token_leeway_seconds=1.0
    ) as srv:
        env = {
            **os.environ,
            "APPLIANCE_URL": srv.base_url,
            "APPLIANCE_API_KEY": srv.api_key,
            "APPLIANCE_API_SECRET": srv.api_secret,
            "APPLIANCE_RUN": tmp_path.name[-12:],
            "APPLIANCE_DEFAULT_PORT": str(ServerSettings().port),
            "APPLIANCE_IDLE_SECONDS": str(IDLE_SECONDS),
        }
        proc = await asyncio.create_subprocess_exec(
            node,
            str(SCRIPT),
            cwd=JS_DIR,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), DEADLINE_SECONDS)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"the Node flow did not finish in {DEADLINE_SECONDS} s")
        text = out.decode(errors="replace")
        assert proc.returncode == 0, f"{text}\n{err.decode(errors='replace')[-6000:]}"
        figures = json.loads(text.strip().splitlines()[-1])
        assert figures["ok"] is True
        assert figures["idle_pings"] >= 3
        # user_details sent on connect were saved: the user's own name, image and custom.
        async with srv.client() as http:
            r = await http.get(
                "/api/v2/users",
                params={"payload": json.dumps({"filter_conditions": {"id": "alice"}})},
            )
        assert r.status_code == 200, r.text
        (alice,) = r.json()["users"]
        assert alice["name"] == "Alice Caller"
        assert alice["image"] == "https://example.org/alice.png"
        assert alice["custom"] == {"ward": "B"}
        assert alice["role"] == "user"
        assert "Traceback" not in srv.log_text()
