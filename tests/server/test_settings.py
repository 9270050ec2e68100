"""Server settings: YAML loading, env overrides, the generated secret, TLS, TURN credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import stat

import httpx
import pytest
from cryptography import x509

from appliance.clock import ManualClock
from appliance.errors import ConfigError
from appliance.server.api.iceservers import ice_servers_for
from appliance.server.settings import IceServer, ServerSettings, ensure_secret, load_settings
from appliance.server.tls import self_signed
from tests.support.server import running_server


def test_load_resolves_paths_and_env_overrides(tmp_path) -> None:
    cfg = tmp_path / "conf" / "server.yaml"
    cfg.parent.mkdir()
    cfg.write_text("api_key: k1\nstate_dir: ../state\ncall_types: types.yaml\n")
    s = load_settings(cfg, env={})
    assert s.api_key == "k1" and s.api_secret is None
    assert s.state_dir == tmp_path / "conf" / ".." / "state"
    assert s.call_types == tmp_path / "conf" / "types.yaml"
    s = load_settings(cfg, env={"APPLIANCE_API_KEY": "k2", "APPLIANCE_API_SECRET": "s2"})
    assert (s.api_key, s.api_secret) == ("k2", "s2")


def test_yaml_mistakes_are_file_line_errors(tmp_path) -> None:
    cfg = tmp_path / "server.yaml"
    cfg.write_text("api_key: k\nport: 3040\nlimits:\n  max_body_byte: 10\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert str(err.value).startswith(f"{cfg}:4: limits.max_body_byte: unknown key")
    cfg.write_text("ice_servers:\n  - urls: http://stun.example.org\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert f"{cfg}:2:" in str(err.value) and "stun:" in str(err.value)
    cfg.write_text("port: 1\nport: 2\n")
    with pytest.raises(ConfigError, match="duplicate key 'port'"):
        load_settings(cfg, env={})


def test_generated_secret_is_private_and_reused(tmp_path) -> None:
    first = ensure_secret(ServerSettings(state_dir=tmp_path))
    path = tmp_path / "api_secret"
    assert first.api_secret and len(first.api_secret) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ensure_secret(ServerSettings(state_dir=tmp_path))
    assert again.api_secret == first.api_secret and again.api_key == "appliance"
    configured = ensure_secret(ServerSettings(state_dir=tmp_path, api_secret="mine"))
    assert configured.api_secret == "mine"


def test_turn_credentials_are_coturn_use_auth_secret() -> None:
    clock = ManualClock(1_800_000_000.0)
    servers = [
        IceServer(urls="stun:stun.example.org"),
        IceServer(urls=["turn:turn.example.org:3478"], secret="s3cret", ttl_seconds=3600),
        IceServer(urls=["turns:t.example.org"], username="u", credential="p"),
    ]
    stun, turn, static = ice_servers_for(servers, "door-1", clock)
    assert stun == {"urls": ["stun:stun.example.org"], "username": "", "password": ""}
    assert turn["username"] == "1800003600:door-1"
    expected = base64.b64encode(
        hmac.new(b"s3cret", b"1800003600:door-1", hashlib.sha1).digest()
    ).decode()
    assert turn["password"] == expected
    assert (static["username"], static["password"]) == ("u", "p")


def test_self_signed_certificate_is_made_once(tmp_path) -> None:
    files = self_signed(tmp_path, extra_names=["192.168.1.20"])
    cert_bytes = files.cert.read_bytes()
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_bytes)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    assert {"127.0.0.1", "192.168.1.20"} <= ips
    assert self_signed(tmp_path).cert.read_bytes() == cert_bytes


async def test_https_with_self_signed_certificate(tmp_path) -> None:
    async with running_server(tmp_path, users=["alice"], tls="self-signed") as srv:
        assert srv.base_url.startswith("https://")
        cert = srv.settings.state_dir / "tls-self-signed.crt"
        ctx = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(verify=ctx) as http:
            r = await http.get(srv.base_url + "/healthz")
        assert r.status_code == 200
