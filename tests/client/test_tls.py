"""TLS against a real `appliance serve` with its self-signed certificate: pinned CA or refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.client import Client
from appliance.errors import ServerUnavailable
from tests.client.conftest import USERS
from tests.support.server import running_server


@pytest.mark.e2e
async def test_pinned_ca_is_trusted_and_an_unknown_one_refused(tmp_path: Path) -> None:
    async with running_server(tmp_path, users=USERS, subprocess=True, tls="self-signed") as srv:
        assert srv.base_url.startswith("https://")
        cert = srv.settings.state_dir / "tls-self-signed.crt"
        token = srv.user_token("door")
        async with Client(srv.base_url, srv.api_key, token, ca_file=str(cert)) as client:
            response = await client.call("default", "door-1").create(member_ids=["alice"])
            assert response.call.cid == "default:door-1"
            assert await client.connect(10)  # wss:// with the same pinned CA
        async with Client(srv.base_url, srv.api_key, token) as client:
            with pytest.raises(ServerUnavailable, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
                await client.call("default", "door-1").get()
