"""Error answers: JSON with code/message/StatusCode/details, the bad field named, never a 500."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from appliance.server.api import routes_calltypes
from tests.support.server import ServerHandle, running_server

CALL = "/api/v2/video/call/default/door-1"


def _is_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"code", "message", "StatusCode", "details"}
    assert body["StatusCode"] == status
    assert "Traceback" not in r.text
    return body


async def test_validation_error_names_the_field(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.post(
            CALL, json={"data": {"created_by_id": "alice", "members": [{"role": "x"}]}}
        )
    body = _is_error(r, 400)
    assert body["code"] == 4
    assert body["exception_fields"]["field"] == "data.members[0].user_id"
    assert body["message"].startswith("data.members[0].user_id:")


async def test_malformed_json_and_wrong_types(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.post(
            CALL, content=b"{not json", headers={"content-type": "application/json"}
        )
        _is_error(r, 400)
        r = await http.post(CALL, json=[1, 2, 3])
        _is_error(r, 400)
        r = await http.get(CALL, params={"members_limit": "many"})
        assert _is_error(r, 400)["exception_fields"]["field"] == "members_limit"
        r = await http.post("/api/v2/video/call/default/bad id!", json={})
        _is_error(r, 400)


async def test_unknown_route_and_method(server: ServerHandle) -> None:
    async with server.client() as http:
        _is_error(await http.get("/api/v2/video/nothing-here"), 404)
        _is_error(await http.delete(CALL), 405)


async def test_unknown_call_and_call_type(server: ServerHandle) -> None:
    async with server.client() as http:
        body = _is_error(await http.get(CALL), 404)
        assert body["exception_fields"]["cid"] == "default:door-1"
        body = _is_error(
            await http.post(
                "/api/v2/video/call/nosuchtype/x", json={"data": {"created_by_id": "alice"}}
            ),
            404,
        )
        assert "nosuchtype" in body["message"]


async def test_body_over_the_limit_is_413(tmp_path) -> None:
    async with running_server(tmp_path, users=["alice"], limits={"max_body_bytes": 2048}) as srv:
        async with srv.client() as http:
            big = {"data": {"created_by_id": "alice", "custom": {"x": "y" * 5000}}}
            body = _is_error(await http.post(CALL, json=big), 413)
            assert body["code"] == 22

            async def chunks():
                for _ in range(10):
                    yield b"x" * 1000

            # no Content-Length: the limit is enforced while reading
            r = await http.post(
                CALL, content=chunks(), headers={"content-type": "application/json"}
            )
            _is_error(r, 413)


async def test_custom_data_limit(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.post(
            CALL, json={"data": {"created_by_id": "alice", "custom": {"x": "y" * 6000}}}
        )
    assert _is_error(r, 400)["exception_fields"]["field"] == "data.custom"


async def test_healthz_and_openapi(server: ServerHandle) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        r = await http.get("/healthz")
        assert r.status_code == 200 and r.json()["ok"] is True
        spec = (await http.get("/openapi.json")).json()
    assert "/api/v2/video/call/{type}/{id}" in spec["paths"]
    post = spec["paths"]["/api/v2/video/call/{type}/{id}"]["post"]
    assert "requestBody" in post


async def test_console_is_served_after_the_api(server: ServerHandle) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as http:
        page = await http.get("/")
        missing = await http.get("/api/v2/video/nothing")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert missing.status_code == 404 and missing.json()["StatusCode"] == 404


async def test_nul_characters_and_overlong_token_user_are_refused(server: ServerHandle) -> None:
    async with server.client() as http:
        r = await http.post(
            CALL, json={"data": {"created_by_id": "alice", "custom": {"x": "a\x00b"}}}
        )
        assert _is_error(r, 400)["message"].startswith("strings may not contain NUL")
        r = await http.post(
            CALL, json={"data": {"created_by_id": "alice", "custom": {"x": "a\\u0000"}}}
        )
        assert r.status_code == 200  # an escaped backslash followed by "u0000" is fine
    async with server.client(token=server.user_token("u" * 256)) as http:
        _is_error(await http.get(CALL), 401)


async def test_lone_surrogates_and_deep_nesting_are_400_not_500(server: ServerHandle) -> None:
    """JSON may spell "\\ud800" (a lone UTF-16 surrogate); it is no character and the database
    cannot store it. A pair is one character (an emoji) and is fine."""
    json_header = {"content-type": "application/json"}
    async with server.client() as http:
        for body in (
            b'{"users": {"zz": {"id": "zz", "custom": {"a": "\\ud800"}}}}',
            b'{"users": {"zz": {"id": "zz", "name": "x\\uDC00"}}}',
        ):
            r = await http.post("/api/v2/users", content=body, headers=json_header)
            assert "lone UTF-16 surrogates" in _is_error(r, 400)["message"]
        pair = b'{"users": {"zz": {"id": "zz", "name": "\\ud83d\\ude00 \\\\ud800"}}}'
        r = await http.post("/api/v2/users", content=pair, headers=json_header)
        assert r.status_code == 200, r.text
        assert r.json()["users"]["zz"]["name"] == "\U0001f600 \\ud800"

        query = '{"filter_conditions": {"name": "\\ud800"}}'
        r = await http.get("/api/v2/users", params={"payload": query})
        assert _is_error(r, 400)["exception_fields"]["field"] == "payload"
        r = await http.get("/api/v2/users", params={"payload": "[" * 5_000 + "]" * 5_000})
        assert _is_error(r, 400)["message"] == "payload: nested too deeply"


async def test_credentials_are_checked_before_the_body(server: ServerHandle) -> None:
    """A malformed body with bad credentials is a 401: nobody learns how we parse without a token."""
    bodies = [b"{not json", b'{"data": {"custom": {"v": NaN}}}', b'{"x": "\\ud800"}', b"[1,"]
    async with httpx.AsyncClient(base_url=server.base_url) as anon:
        for body in bodies:
            for params, headers in (
                ({}, {}),
                ({"api_key": server.api_key}, {}),
                ({"api_key": server.api_key}, {"Authorization": "not-a-jwt"}),
            ):
                r = await anon.post(
                    CALL, content=body, params=params, headers={**RAW_JSON, **headers}
                )
                _is_error(r, 401)
        r = await anon.get("/api/v2/users", params={"api_key": server.api_key, "payload": "{"})
        _is_error(r, 401)
    async with server.client() as http:  # the same bodies with good credentials: 400
        for body in bodies:
            _is_error(await http.post(CALL, content=body, headers=RAW_JSON), 400)


RAW_JSON = {"content-type": "application/json"}


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> int:
    """One request on an open keep-alive connection; the status (0 when the server hung up)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except (asyncio.IncompleteReadError, ConnectionError):
        return 0
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def test_a_500_keeps_the_keep_alive_connection(
    server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starlette re-raises an unexpected error after answering 500; uvicorn then reset the
    connection, and the client's NEXT request on it failed too."""

    def boom(row: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(routes_calltypes, "call_type_response", boom)
    token = server.server_token()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        # The token goes in a query the server does not read: only the path matters here.
        broken = f"/api/v2/video/calltypes/default?api_key={server.api_key}"
        writer.write(
            f"GET {broken} HTTP/1.1\r\nHost: test\r\nAuthorization: {token}\r\n\r\n".encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 500"), head
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        assert b"internal server error" in await reader.readexactly(length)
        # The same connection answers the next request.
        assert await _exchange(reader, writer, "/healthz") == 200
    finally:
        writer.close()
