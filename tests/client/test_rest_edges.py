"""Edge cases of the HTTP side that a healthy server cannot produce on demand (5xx, timeouts,
garbage). The main paths are tested against the real server in test_api.py."""

import socket

import httpx
import pytest

from appliance.client import Client
from appliance.errors import APIError, ServerUnavailable

TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ.c2lnbmF0dXJl"


def client_with(handler: httpx.MockTransport) -> Client:
    http = httpx.AsyncClient(transport=handler)
    return Client("http://appliance.test", "key", TOKEN, http=http)


async def test_user_id_comes_from_the_token() -> None:
    async with client_with(httpx.MockTransport(lambda r: httpx.Response(200))) as client:
        assert client.user_id == "alice"


async def test_5xx_is_server_unavailable_with_the_cid() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad gateway</html>")

    async with client_with(httpx.MockTransport(handler)) as client:
        with pytest.raises(ServerUnavailable) as info:
            await client.call("default", "door-1").get()
    assert info.value.cid == "default:door-1"
    assert info.value.status_code == 502
    assert "Bad gateway" in str(info.value)


async def test_timeout_is_server_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    async with client_with(httpx.MockTransport(handler)) as client:
        with pytest.raises(ServerUnavailable, match="timed out") as info:
            await client.call("default", "door-1").end()
    assert info.value.cid == "default:door-1"


async def test_answer_that_is_not_json_is_server_unavailable() -> None:
    async with client_with(httpx.MockTransport(lambda r: httpx.Response(200, text="<html>"))) as c:
        with pytest.raises(ServerUnavailable, match="not JSON"):
            await c.query_calls()


async def test_unknown_4xx_is_an_api_error_with_its_status() -> None:
    handler = httpx.MockTransport(
        lambda r: httpx.Response(
            429, json={"code": 9, "message": "Too many requests", "StatusCode": 429}
        )
    )
    async with client_with(handler) as client:
        with pytest.raises(APIError) as info:
            await client.call("default", "x").get()
    assert info.value.status_code == 429
    assert str(info.value) == "Too many requests [default:x]"


async def test_connection_refused_is_server_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Client(f"http://127.0.0.1:{port}", "key", TOKEN) as client:
        with pytest.raises(ServerUnavailable, match="cannot reach"):
            await client.call("default", "x").get()


async def test_requests_carry_api_key_and_jwt_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"calls": []})

    async with client_with(httpx.MockTransport(handler)) as client:
        await client.query_calls({"team": "north"}, sort=("created_at", -1), limit=5)
    request = seen[0]
    assert request.url.params["api_key"] == "key"
    assert request.headers["Authorization"] == TOKEN
    assert request.headers["stream-auth-type"] == "jwt"
    assert request.url.path == "/api/v2/video/calls"


def token_for(exp: float | None, user: str = "alice") -> str:
    import jwt

    claims: dict[str, object] = {"user_id": user}
    if exp is not None:
        claims["exp"] = int(exp)
    return jwt.encode(claims, "s" * 32, algorithm="HS256")


async def test_token_about_to_expire_is_refreshed_before_the_request() -> None:
    from appliance.clock import ManualClock

    clock = ManualClock()
    seen: list[str] = []
    fresh = token_for(clock.time() + 3600)

    async def provider() -> str:
        return fresh

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"calls": []})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    expiring = token_for(clock.time() + 30)
    async with Client(
        "http://appliance.test", "key", expiring, http=http, clock=clock, token_provider=provider
    ) as client:
        await client.query_calls()
        await client.query_calls()
    assert seen == [fresh, fresh]


async def test_concurrent_refusals_refresh_the_token_once() -> None:
    import asyncio

    old, new = token_for(None), token_for(None, user="alice2")
    refreshes: list[str] = []

    async def provider() -> str:
        refreshes.append("x")
        await asyncio.sleep(0.01)
        return new

    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == old:
            return httpx.Response(
                401, json={"code": 5, "message": "token expired", "StatusCode": 401}
            )
        return httpx.Response(200, json={"calls": []})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with Client("http://appliance.test", "key", old, http=http, token_provider=provider) as c:
        await asyncio.gather(*(c.query_calls() for _ in range(5)))
    assert refreshes == ["x"]
