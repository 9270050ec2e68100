"""Credentials from the server's own config (``appliance call … --config server.yaml``): the
base URL, the API key, a token minted from the server's secret and the certificate to trust when
the server serves a self-signed one. The operator's bridge between the client CLI and the
server's settings: it lives beside the top-level ``cli.py`` so that ``client/`` imports nothing
of ``server/`` (docs/architecture.md)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerCredentials:
    url: str
    api_key: str
    token: str
    ca_file: str | None


def from_server_config(path: str, as_user: str | None) -> ServerCredentials:
    """A server token, or ``as_user``'s token, for the server that ``path`` configures."""
    from appliance.server.settings import ensure_secret, load_settings
    from appliance.server.tls import CERT_NAME
    from appliance.tokens import create_token

    settings = ensure_secret(load_settings(path))
    assert settings.api_secret and settings.api_key
    generated_cert = settings.state_dir / CERT_NAME
    self_signed = settings.tls == "self-signed" and generated_cert.is_file()
    return ServerCredentials(
        url=settings.public_base_url(),
        api_key=settings.api_key,
        token=create_token(settings.api_secret, as_user),
        ca_file=str(generated_cert) if self_signed else None,
    )
