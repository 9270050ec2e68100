"""Every error class, produced by a real server (or a stopped one), each carrying the call cid."""

from __future__ import annotations

import jwt
import pytest

from appliance.client import Backoff, Client
from appliance.errors import (
    AuthenticationError,
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    ServerUnavailable,
)
from tests.client.conftest import MakeClient
from tests.support.server import ServerHandle


def forged_token(user_id: str) -> str:
    return jwt.encode({"user_id": user_id}, "not-the-secret-" * 3, algorithm="HS256")


async def test_bad_token_is_authentication_error(srv: ServerHandle) -> None:
    async with Client(srv.base_url, srv.api_key, forged_token("door")) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.call("default", "door-1").get()
    assert info.value.cid == "default:door-1"
    assert info.value.status_code == 401


async def test_token_refresh_hook_recovers_from_a_refused_token(srv: ServerHandle) -> None:
    calls: list[str] = []

    async def fresh_token() -> str:
        calls.append("refresh")
        return srv.user_token("door")

    async with Client(
        srv.base_url, srv.api_key, forged_token("door"), token_provider=fresh_token
    ) as client:
        response = await client.call("default", "door-1").create(member_ids=["alice"])
        assert response.call.cid == "default:door-1"
        await client.call("default", "door-1").get()
    assert calls == ["refresh"]


async def test_capability_missing_is_permission_denied(make_client: MakeClient) -> None:
    await make_client("door").call("default", "door-1").create(member_ids=["alice"])
    with pytest.raises(PermissionDenied) as info:
        await make_client("carol").call("default", "door-1").update(custom={"x": 1})
    assert info.value.cid == "default:door-1"
    assert isinstance(info.value, PermissionError)


async def test_unknown_call_is_not_found(make_client: MakeClient) -> None:
    with pytest.raises(NotFound) as info:
        await make_client("door").call("default", "nowhere").get()
    assert info.value.cid == "default:nowhere"
    assert isinstance(info.value, LookupError)


async def test_accepting_a_call_with_no_live_session_is_conflict(make_client: MakeClient) -> None:
    await make_client("door").call("default", "door-1").create(member_ids=["alice"])
    with pytest.raises(Conflict) as info:
        await make_client("alice").call("default", "door-1").accept()
    assert info.value.cid == "default:door-1"


async def test_bad_input_is_invalid_request_naming_the_field(make_client: MakeClient) -> None:
    call = make_client("door").call("default", "door-1")
    await call.create(member_ids=["alice"], ring=True)
    with pytest.raises(InvalidRequest) as info:
        await make_client("alice").call("default", "door-1").reject(reason="m" * 33)  # too long
    assert info.value.field == "reason"
    assert info.value.cid == "default:door-1"
    with pytest.raises(InvalidRequest) as info:
        await call.query_members({"colour": "red"})
    assert info.value.field is not None and "colour" in info.value.field


async def test_client_side_sort_mistake_is_invalid_request() -> None:
    async with Client("http://127.0.0.1:9", "key", forged_token("door")) as client:
        with pytest.raises(InvalidRequest) as info:
            await client.call("default", "x").query_members(sort=[("created_at", "desc")])  # type: ignore[list-item]
    assert info.value.field == "sort"


async def test_huge_body_is_payload_too_large(make_client: MakeClient) -> None:
    call = make_client("door").call("default", "door-1")
    with pytest.raises(PayloadTooLarge) as info:
        await call.create(member_ids=["alice"], custom={"blob": "x" * 3_000_000})
    assert info.value.cid == "default:door-1"


async def test_stopped_server_is_server_unavailable(
    srv: ServerHandle, make_client: MakeClient
) -> None:
    client = make_client("door")
    await srv.stop()
    with pytest.raises(ServerUnavailable) as info:
        await client.call("default", "door-1").get()
    assert info.value.cid == "default:door-1"
    assert isinstance(info.value, ConnectionError)


async def test_refused_websocket_token_is_refreshed_and_the_connection_comes_up(
    srv: ServerHandle,
) -> None:
    refreshed: list[str] = []

    async def fresh_token() -> str:
        refreshed.append("refresh")
        return srv.user_token("door")

    async with Client(
        srv.base_url,
        srv.api_key,
        forged_token("door"),
        token_provider=fresh_token,
        backoff=Backoff(base=0.05, cap=0.1),
    ) as client:
        assert await client.connect(10)
        assert refreshed == ["refresh"]
