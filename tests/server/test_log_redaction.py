"""Never a token in a log line: the sign-in link's query, a token in a WebSocket URL, whether
uvicorn configures logging itself or hands its records to ours (``log_config=None``)."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
import websockets
from uvicorn.logging import AccessFormatter

from appliance.server.wire.redact import REDACTED, TokenRedactor, install, redact
from tests.support.server import running_server


async def test_appliance_serve_logs_requests_but_no_token(tmp_path) -> None:
    async with running_server(tmp_path, users=["alice"], subprocess=True) as srv:
        token = srv.user_token("alice")
        server_token = srv.server_token()
        async with httpx.AsyncClient(base_url=srv.base_url) as http:
            r = await http.get("/", params={"api_key": srv.api_key, "token": token})
            assert r.status_code == 200
            r = await http.get(
                "/api/v2/video/calltypes",
                params={"api_key": srv.api_key, "access_token": server_token},
                headers={"Authorization": server_token},
            )
            assert r.status_code == 200
            await http.get(f"/nothing?x={token}")
        ws = await websockets.connect(f"{srv.ws_url}&token={token}")
        await ws.send(json.dumps({"token": token, "user_details": {"id": "alice"}}))
        assert json.loads(await ws.recv())["type"] == "connection.ok"
        await ws.close()
        # The access line of the last request is written before its answer is complete.
        for _ in range(100):
            if "/nothing?x=" in srv.log_text():
                break
            await asyncio.sleep(0.05)
        log = srv.log_text()
    # The access log is on (what it would have leaked is there, blanked) ...
    assert f'"GET /?api_key={srv.api_key}&token={REDACTED} HTTP/1.1" 200' in log, log
    assert "/api/v2/connect?api_key=" in log, log
    assert f"/nothing?x={REDACTED}" in log, log
    # ... and no token, in no form.
    for secret in (token, server_token, *token.split("."), server_token.split(".")[2]):
        assert secret not in log, log


@pytest.mark.parametrize("configured", [True, False])
def test_the_filter_works_with_or_without_uvicorn_logging(
    configured: bool, caplog: pytest.LogCaptureFixture
) -> None:
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoiYWxpY2UifQ.c2lnbmF0dXJl"
    install()
    install()  # idempotent
    logger = logging.getLogger("uvicorn.access")
    assert sum(isinstance(f, TokenRedactor) for f in logger.filters) == 1
    path = f"/?api_key=k&token={jwt_like}"
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", path, "1.1", 200)
    record = caplog.records[-1]
    if configured:  # uvicorn's own formatter unpacks the five arguments
        line = AccessFormatter(fmt='%(client_addr)s - "%(request_line)s" %(status_code)s').format(
            record
        )
    else:
        line = record.getMessage()
    assert jwt_like not in line and f"token={REDACTED}" in line


def test_what_is_redacted() -> None:
    assert (
        redact("GET /?api_key=k&token=abc HTTP/1.1") == f"GET /?api_key=k&token={REDACTED} HTTP/1.1"
    )
    assert redact("x?access_token=a&b=2") == f"x?access_token={REDACTED}&b=2"
    assert "eyJ" not in redact("Authorization: eyJhbGciOiJIUzI1NiJ9.e30.AAAA")
    assert redact("GET /healthz HTTP/1.1") == "GET /healthz HTTP/1.1"
