"""TLS for the call server: configured cert/key files, or a self-signed pair made once and reused.

Browsers give a page camera and microphone only in a secure context, so a console opened from a
phone at ``https://192.168.1.20`` needs this; on loopback or behind a TLS proxy plain HTTP is fine.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.errors import ConfigError
from appliance.server.settings import ServerSettings, TlsFiles

log = logging.getLogger(__name__)

CERT_NAME = "tls-self-signed.crt"
KEY_NAME = "tls-self-signed.key"


def tls_files(settings: ServerSettings) -> TlsFiles | None:
    """The cert/key pair to serve with, or ``None`` for plain HTTP."""
    if settings.tls is None:
        return None
    if isinstance(settings.tls, TlsFiles):
        for p, key in ((settings.tls.cert, "tls.cert"), (settings.tls.key, "tls.key")):
            if not p.is_file():
                raise ConfigError("file not found", file=str(p), key=key)
        return settings.tls
    return self_signed(settings.state_dir, extra_names=[settings.host])


def self_signed(state_dir: Path, extra_names: list[str] | None = None) -> TlsFiles:
    cert_path, key_path = state_dir / CERT_NAME, state_dir / KEY_NAME
    if cert_path.is_file() and key_path.is_file():
        return TlsFiles(cert=cert_path, key=key_path)
    state_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(hostname)]
    addresses = {"127.0.0.1", "::1", *(n for n in extra_names or [] if n)}
    for value in sorted(addresses):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(value)))
        except ValueError:
            names.append(x509.DNSName(value))
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"appliance {hostname}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.warning(
        "generated a self-signed TLS certificate %s (browsers will ask to trust it)", cert_path
    )
    return TlsFiles(cert=cert_path, key=key_path)
