"""Paging forward and back through 1,000 members of one call, against a real server."""

from __future__ import annotations

from appliance.client import Call, Client, User
from appliance.client.call import Sort
from tests.client.conftest import MakeClient

N = 1000
IDS = [f"resident-{i:04d}" for i in range(N)]


async def populate(server: Client) -> Call:
    for start in range(0, N, 100):
        await server.upsert_users(*(User(id=uid) for uid in IDS[start : start + 100]))
    call = server.call("default", "building")
    await call.create(created_by_id="door")
    for start in range(0, N, 100):
        await call.update_members(
            [
                {"user_id": uid, "custom": {"floor": i % 10}}
                for i, uid in enumerate(IDS[start : start + 100], start=start)
            ]
        )
    return call


async def walk(
    call: Call, sort: Sort, size: int, filters: dict | None = None
) -> tuple[list[list[str]], list[list[str]]]:
    """Pages going forward with ``next``, then back from the last page with ``prev``."""
    forward: list[list[str]] = []
    page = await call.query_members(filters, sort, limit=size)
    forward.append([m.user_id for m in page.members])
    while page.next:
        page = await call.query_members(filters, sort, limit=size, next=page.next)
        forward.append([m.user_id for m in page.members])
    assert page.next is None
    backward = [forward[-1]]
    while page.prev:
        page = await call.query_members(filters, sort, limit=size, prev=page.prev)
        backward.append([m.user_id for m in page.members])
    return forward, backward


async def test_forward_and_back_through_1000_members(make_client: MakeClient) -> None:
    call = await populate(make_client())

    forward, backward = await walk(call, [("user_id", 1)], 100)
    assert [uid for page in forward for uid in page] == IDS
    assert all(len(page) == 100 for page in forward)
    assert backward == list(reversed(forward))

    newest_first, back = await walk(call, [("created_at", -1)], 64)
    seen = [uid for page in newest_first for uid in page]
    assert sorted(seen) == IDS and len(set(seen)) == N
    assert back == list(reversed(newest_first))

    floor3, back3 = await walk(call, [("user_id", -1)], 30, {"custom.floor": 3})
    assert [uid for page in floor3 for uid in page] == list(reversed(IDS[3::10]))
    assert back3 == list(reversed(floor3))

    every = [m.user_id async for m in call.iter_members(sort=[("user_id", 1)])]
    assert every == IDS
