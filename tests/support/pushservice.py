"""A push-service stand-in on loopback: the receiving side of RFC 8030 (Web Push) for tests.

No machine here reaches FCM, Mozilla or Apple, so tests bring this. It does what a push service
does with a message and records it:

- checks the VAPID ``Authorization: vapid t=<JWT>,k=<key>`` (RFC 8292): ES256 signature with
  ``k``, ``k`` equal to the application server key the subscription was made with, ``aud`` =
  this service's origin, ``exp`` in the future and at most 24 h away, ``sub`` present;
- needs ``TTL`` and ``Content-Encoding: aes128gcm``, decrypts the body (RFC 8291) with the
  subscription's private key and auth secret (made here by ``make_subscription``);
- records ``TTL``, ``Urgency``, ``Topic``, the decrypted payload and the arrival time;
- answers ``201`` unless told otherwise (``answer(429, retry_after=1)``, ``answer(410)``…),
  or holds every request until ``release()`` (a push service that hangs).

Usage::

    async with PushService() as push:              # http://127.0.0.1:<port>
        push.vapid_public_key = key                # the server's (GET /api/v2/app)
        sub, private_key = push.make_subscription("alice")  # PushSubscription.toJSON() shape
        ...                                        # POST sub to /api/v2/devices, ring alice
        got = await push.wait_for(lambda m: m.user == "alice" and m.payload["type"] == "call.ring")
        got.ttl, got.urgency, got.topic, got.payload, got.arrived

The server must allow the stand-in's origin: ``push={"allowed_hosts": [push.origin]}`` (plain
``http`` is accepted for loopback origins only). ``received`` lists the accepted messages,
``attempts`` every request with the status it got.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.poll import until  # noqa: F401  (re-exported: tests import it from here)

MAX_BODY = 4096  # RFC 8030's minimum a push service must accept; ours accepts no more
MAX_EXP_SECONDS = 24 * 3600
TIMEOUT = 10.0


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Message:
    """One request that reached a subscription's endpoint."""

    user: str
    endpoint: str
    status: int
    arrived: float  # time.time() when the request's body was read
    ttl: int | None = None
    urgency: str | None = None
    topic: str | None = None
    payload: Any = None  # the decrypted JSON
    text: str = ""  # the decrypted body as text (what ServiceWorker.deliverPushMessage takes)
    claims: dict[str, Any] = field(default_factory=dict)
    problem: str = ""


@dataclass
class _Sub:
    user: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    app_key: str | None


@dataclass
class _Answer:
    status: int
    retry_after: float | None
    endpoint: str | None


class PushService:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, control: bool = False) -> None:
        self.host = host
        self.control = control
        self.port = port or _free_port()
        self.vapid_public_key: str | None = None
        self.received: list[Message] = []
        self.attempts: list[Message] = []
        self._subs: dict[str, _Sub] = {}
        self._answers: deque[_Answer] = deque()
        self._held: asyncio.Event | None = None
        self.holding = 0  # requests waiting for release()
        self._verified: dict[str, dict[str, Any]] = {}
        self._counts: Counter[tuple[Any, Any]] = Counter()
        self._changed = asyncio.Condition()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"PushService({self.origin}, {len(self.received)} received)"

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- what a browser would get from pushManager.subscribe() ---------------------------

    def make_subscription(
        self, user: str, application_server_key: str | None = None
    ) -> tuple[dict[str, Any], ec.EllipticCurvePrivateKey]:
        """A new subscription of ``user`` (a label for the records): its JSON and private key.
        ``application_server_key``: the VAPID key it is bound to (default: ``vapid_public_key``
        at the time a message arrives)."""
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        endpoint = f"{self.origin}/push/{secrets.token_urlsafe(24)}"
        self._subs[endpoint] = _Sub(user, key, auth, application_server_key)
        point = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        sub = {
            "endpoint": endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(auth)},
        }
        return sub, key

    def forget(self, endpoint: str) -> None:
        """The browser unsubscribed: the endpoint now answers 410 Gone."""
        self._subs.pop(endpoint, None)

    # --- how it answers --------------------------------------------------------------------

    def answer(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        endpoint: str | None = None,
    ) -> None:
        """The next ``times`` requests (to ``endpoint`` only, if given) get ``status``."""
        for _ in range(times):
            self._answers.append(_Answer(status, retry_after, endpoint))

    def hold(self) -> None:
        """Every request waits (its connection open, no answer) until ``release()``."""
        self._held = asyncio.Event()

    def release(self) -> None:
        if self._held is not None:
            self._held.set()
            self._held = None

    # --- waiting ---------------------------------------------------------------------------

    async def wait_for(
        self, predicate: Callable[[Message], bool], within: float = TIMEOUT
    ) -> Message:
        """The first accepted message matching ``predicate`` (already received or to come)."""
        return (await self.wait_count(predicate, 1, within))[0]

    async def wait_count(
        self, predicate: Callable[[Message], bool], count: int, within: float = TIMEOUT
    ) -> list[Message]:
        """Once ``count`` accepted messages match: all of them."""
        return await self._wait(self.received, predicate, count, within)

    async def wait_attempts(
        self, predicate: Callable[[Message], bool], count: int, within: float = TIMEOUT
    ) -> list[Message]:
        """Once ``count`` requests (whatever they were answered) match: all of them."""
        return await self._wait(self.attempts, predicate, count, within)

    async def _wait(
        self,
        source: list[Message],
        predicate: Callable[[Message], bool],
        count: int,
        within: float,
    ) -> list[Message]:
        def found() -> list[Message]:
            return [m for m in source if predicate(m)]

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(found()) >= count)
        return found()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        config = uvicorn.Config(
            self._app,
            host=self.host,
            port=self.port,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + TIMEOUT
        while not self._server.started:
            if self._task.done():
                self._task.result()
            if time.monotonic() > deadline:
                raise TimeoutError("push-service stand-in did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.release()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None

    async def __aenter__(self) -> PushService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- the RFC 8030 receiving side -------------------------------------------------------

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if self.control and scope["path"].startswith("/_control/"):
            await self._control(scope, receive, send)
            return
        body = await _read_body(receive)
        arrived = time.time()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        endpoint = f"{self.origin}{scope['path']}"
        sub = self._subs.get(endpoint)
        record = Message(user=sub.user if sub else "", endpoint=endpoint, status=0, arrived=arrived)
        status, extra = self._check(scope, headers, body, sub, record)
        if status == 201:
            scripted = self._next_answer(endpoint)
            if scripted is not None:
                status = scripted.status
                if scripted.retry_after is not None:
                    extra.append((b"retry-after", str(scripted.retry_after).encode()))
        held = self._held
        if held is not None:
            self.holding += 1
            try:
                await held.wait()
            finally:
                self.holding -= 1
        record.status = status
        async with self._changed:
            self.attempts.append(record)
            if status == 201:
                self.received.append(record)
                payload = record.payload if isinstance(record.payload, dict) else {}
                self._counts[(payload.get("type"), payload.get("call_cid"))] += 1
            self._changed.notify_all()
        location = [(b"location", f"{self.origin}/message/{len(self.attempts)}".encode())]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", b"0"), *(location if status == 201 else extra)],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    async def _control(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The stand-in run as its own process (``main``): another process subscribes, hands
        it the server's key and reads what arrived, over HTTP."""
        body = await _read_body(receive)
        path = scope["path"].removeprefix("/_control/")
        out: Any = {}
        if path == "subscribe":
            out = self.make_subscription(json.loads(body)["user"])[0]
        elif path == "key":
            self.vapid_public_key = json.loads(body)["vapid_public_key"]
        elif path == "count":  # polled by a benchmark while it measures: O(1)
            want = json.loads(body)
            out = self._counts[(want["type"], want["call_cid"])]
        elif path == "received":
            out = [
                {
                    "user": m.user,
                    "status": m.status,
                    "arrived": m.arrived,
                    "type": (m.payload or {}).get("type"),
                    "call_cid": (m.payload or {}).get("call_cid"),
                    "problem": m.problem,
                }
                for m in self.attempts
            ]
        data = json.dumps(out).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})

    def _next_answer(self, endpoint: str) -> _Answer | None:
        for answer in self._answers:
            if answer.endpoint in (None, endpoint):
                self._answers.remove(answer)
                return answer
        return None

    def _check(
        self,
        scope: dict[str, Any],
        headers: dict[str, str],
        body: bytes,
        sub: _Sub | None,
        record: Message,
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        if scope["method"] != "POST":
            record.problem = "not a POST"
            return 405, []
        if sub is None:
            record.problem = "no such subscription"
            return 410 if scope["path"].startswith("/push/") else 404, []
        try:
            record.claims = self._vapid(headers.get("authorization", ""), sub)
        except ValueError as err:
            record.problem = f"VAPID: {err}"
            return 401, []
        if "ttl" not in headers:
            record.problem = "no TTL header"
            return 400, []
        try:
            record.ttl = int(headers["ttl"])
        except ValueError:
            record.problem = "TTL is not an integer"
            return 400, []
        record.urgency = headers.get("urgency")
        record.topic = headers.get("topic")
        if record.topic is not None and (
            len(record.topic) > 32
            or not all(c.isalnum() or c in "-_" for c in record.topic)
            or not record.topic.isascii()
        ):
            record.problem = "Topic is not at most 32 base64url characters"
            return 400, []
        if len(body) > MAX_BODY:
            record.problem = f"body of {len(body)} bytes is over {MAX_BODY}"
            return 413, []
        if headers.get("content-encoding") != "aes128gcm":
            record.problem = "Content-Encoding is not aes128gcm"
            return 415, []
        try:
            plain = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
            record.text = plain.decode("utf-8")
            record.payload = json.loads(record.text)
        except Exception as err:  # any failure to decrypt or parse is the sender's mistake
            record.problem = f"cannot decrypt: {err!r}"
            return 400, []
        return 201, []

    def _vapid(self, authorization: str, sub: _Sub) -> dict[str, Any]:
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"scheme {scheme!r} is not vapid")
        parts = dict(p.strip().split("=", 1) for p in rest.split(",") if "=" in p)
        token, key = parts.get("t", ""), parts.get("k", "")
        wanted = sub.app_key or self.vapid_public_key
        if wanted is not None and key != wanted:
            raise ValueError("k is not the key the subscription was made with")
        claims = self._verified.get(token)
        if claims is None:
            try:
                public = ec.EllipticCurvePublicKey.from_encoded_point(
                    ec.SECP256R1(), _unb64url(key)
                )
                claims = jwt.decode(
                    token,
                    public,
                    algorithms=["ES256"],
                    audience=self.origin,
                    options={"require": ["exp", "aud", "sub"]},
                )
            except (jwt.PyJWTError, ValueError) as err:
                raise ValueError(str(err)) from None
            self._verified[token] = claims
        now = time.time()
        if not now < claims["exp"] <= now + MAX_EXP_SECONDS:
            raise ValueError("exp is not within the next 24 hours")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise ValueError("sub is not a mailto: or https: URL")
        return dict(claims)


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(port: int) -> None:
    async with PushService(port=port, control=True) as service:
        print(f"push service stand-in at {service.origin}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    """``python -m tests.support.pushservice PORT``: the stand-in as its own process, with the
    ``/_control/`` routes (subscribe, key, received) for a benchmark in another process."""
    import sys

    asyncio.run(_serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))


if __name__ == "__main__":
    main()
