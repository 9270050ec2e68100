"""The curated public surface of appliance.client, and building a client from config."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import appliance.client as client_pkg
from appliance.client import Client, ClientConfig
from appliance.errors import ConfigError

TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjoiZG9vciJ9.c2lnbmF0dXJl"


def test_all_names_exist_and_are_public() -> None:
    assert sorted(client_pkg.__all__) == sorted(set(client_pkg.__all__))
    for name in client_pkg.__all__:
        obj = getattr(client_pkg, name)
        module = getattr(obj, "__module__", "appliance.client")
        assert module.startswith("appliance.client"), name


@pytest.mark.parametrize(
    "config",
    [
        ClientConfig(base_url="http://127.0.0.1:3040", api_key="k", token=TOKEN),
        {"url": "http://127.0.0.1:3040", "api_key": "k", "token": TOKEN},
        SimpleNamespace(url="http://127.0.0.1:3040", api_key="k", token=TOKEN, ca_file=None),
    ],
)
async def test_from_config_accepts_models_mappings_and_objects(config: object) -> None:
    async with Client.from_config(config, heartbeat_interval=5.0) as client:
        assert client.base_url == "http://127.0.0.1:3040"
        assert client.user_id == "door"
        assert client.connection.heartbeat_interval == 5.0
        assert client.connection.url == "ws://127.0.0.1:3040/api/v2/connect?api_key=k"


def test_config_mistakes_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        Client("127.0.0.1:3040", "k", TOKEN)
    with pytest.raises(ConfigError, match="not a JWT"):
        Client("http://127.0.0.1:3040", "k", "garbage")
    for url in ("http://127.0.0.1:99999", "http://[::1", "https://:8443"):
        with pytest.raises(ConfigError, match="base_url"):
            Client(url, "k", TOKEN)


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    for ca_file in (tmp_path / "missing.pem", not_pem):
        with pytest.raises(ConfigError, match="ca_file: cannot load CA certificate"):
            Client("https://127.0.0.1:3040", "k", TOKEN, ca_file=str(ca_file))


async def test_https_gives_a_secure_websocket_url() -> None:
    async with Client("https://intercom.example:8443", "k", TOKEN) as client:
        assert client.connection.url == "wss://intercom.example:8443/api/v2/connect?api_key=k"
