"""The server's VAPID key pair (RFC 8292, P-256) and the ``Authorization`` header it signs.

The pair is made once per database and shared by every replica: each replica inserts a fresh
pair with ``ON CONFLICT DO NOTHING`` and then reads back whichever pair won, so replicas
starting together agree on one key (a browser subscribed with the public key as its
``applicationServerKey`` only accepts pushes signed with the matching private key).

Signing is ``py_vapid``'s (ES256 over ``{aud, exp, sub}``). A push service checks ``exp``
against the real time, so the token is stamped from the system clock, not the server's
injected one; it is cached per push-service origin and re-signed an hour before it expires,
so a ring to 200 subscriptions on one service costs one signature, not 200.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from appliance.clock import Clock, SystemClock
from appliance.server.store.engine import Store
from appliance.server.store.schema import server_keys

log = logging.getLogger(__name__)

KEY_ID = "vapid"
# RFC 8292 allows up to 24 h; 12 h leaves room for a push service's clock being ahead.
TOKEN_SECONDS = 12 * 3600
RESIGN_BEFORE_SECONDS = 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding; raises ``ValueError`` on anything else."""
    if not isinstance(text, str) or not text.isascii() or any(c in text for c in "+/ \n"):
        raise ValueError("not base64url text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_point(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed point (65 bytes, ``0x04 || X || Y``)."""
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def insert_ignoring_duplicates(dialect: str, table: Any) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL alike."""
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing()


class VapidKey:
    """The pair, its public key as base64url, and the cached ``Authorization`` header."""

    def __init__(self, private_pem: str, subject: str, wall: Clock | None = None) -> None:
        self._vapid = Vapid02.from_pem(private_pem.encode("ascii"))
        self.subject = subject
        self.public_key = b64url(public_point(self._vapid.public_key))
        self._wall = wall or SystemClock()
        self._tokens: dict[str, tuple[str, float]] = {}
        self.signed = 0  # signatures made (the cache's misses)

    def __repr__(self) -> str:
        return f"VapidKey({self.public_key[:12]}…, {len(self._tokens)} origins)"

    def authorization(self, origin: str) -> str:
        """``vapid t=<jwt>,k=<public key>`` for a push service at ``origin`` (scheme://host[:port])."""
        now = self._wall.time()
        cached = self._tokens.get(origin)
        if cached is not None and cached[1] - now > RESIGN_BEFORE_SECONDS:
            return cached[0]
        exp = int(now) + TOKEN_SECONDS
        header = self._vapid.sign({"aud": origin, "exp": exp, "sub": self.subject})
        value = str(header["Authorization"])
        self._tokens[origin] = (value, float(exp))
        self.signed += 1
        return value


def _new_private_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode("ascii")


async def load_or_create(store: Store, subject: str, now_ns: int) -> VapidKey:
    """The database's pair: made by the first replica to get here, read by all."""
    candidate = _new_private_pem()
    public = b64url(public_point(Vapid02.from_pem(candidate.encode("ascii")).public_key))
    dialect = store.engine.dialect.name
    async with store.begin() as conn:
        await conn.execute(
            insert_ignoring_duplicates(dialect, server_keys).values(
                id=KEY_ID, private_key=candidate, public_key=public, created_at=now_ns
            )
        )
    async with store.connect() as conn:
        row = (
            await conn.execute(select(server_keys.c.private_key).where(server_keys.c.id == KEY_ID))
        ).first()
    assert row is not None
    key = VapidKey(str(row[0]), subject)
    if key.public_key == public:
        log.info("made the VAPID key pair of this database: %s", key.public_key)
    return key
