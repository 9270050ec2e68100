"""``bench/server.py`` tells a ``call.ring`` frame by its first bytes (it reads 100 sockets in one
process and must not parse every frame whole): the frames the server really writes must take that
path, and no other frame may pass for a ring."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bench.server import RING_HEAD, ring_cid
from tests.server.wsclient import QUIET, WsClient
from tests.support.server import running_server


async def test_the_bench_tells_the_servers_ring_frames_by_their_head(tmp_path: Path) -> None:
    async with running_server(tmp_path, users=["caller", "bob"], ws_health_seconds=QUIET) as srv:
        ws = await WsClient.open(srv, "bob")
        body = {
            "data": {
                "created_by_id": "caller",
                "members": [{"user_id": "caller"}, {"user_id": "bob"}],
            },
            "ring": True,
        }
        async with srv.client() as http:
            r = await http.post("/api/v2/video/call/default/door", json=body)
        assert r.status_code == 200, r.text
        raws: list[str] = []
        while not any(json.loads(t)["type"] == "call.ring" for t in raws):
            raws.append(str(await asyncio.wait_for(ws.ws.recv(), 10)))
        await ws.close()
    kinds = [json.loads(t)["type"] for t in raws]
    assert kinds[-1] == "call.ring" and "call.created" in kinds, kinds
    assert RING_HEAD.match(raws[-1]) is not None, raws[-1][:80]  # the fast path, not the fallback
    assert ring_cid(raws[-1]) == "default:door"
    assert ring_cid(raws[-1].encode()) == "default:door"
    assert all(ring_cid(t) is None for t in raws[:-1])
    # A frame written in another order still counts, through the whole parse.
    reordered = json.dumps({"call_cid": "default:x", "type": "call.ring"})
    assert ring_cid(reordered) == "default:x"
    assert ring_cid(json.dumps({"type": "call.created", "call": {"type": "call.ring"}})) is None
