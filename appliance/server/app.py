"""The call server as one ASGI app: ``create_app(settings, *, clock=None)``.

The lifespan opens the store, writes the call types and seed users, builds the
``ServerContext`` (``app.state.ctx``) and starts the realtime layer. Every error answer is JSON
``{"code", "message", "StatusCode", "details"}``; a client's mistake is a 4xx naming the field,
never a 500. The web console (``appliance/server/web``) is mounted at ``/`` after the API.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.clock import Clock, SystemClock
from appliance.errors import (
    API_ERRORS_BY_STATUS,
    APIError,
    InvalidRequest,
    PayloadTooLarge,
    StoreError,
)
from appliance.server import metrics, wiring
from appliance.server.api import (
    routes_calls,
    routes_calltypes,
    routes_clientevents,
    routes_devices,
    routes_members,
    routes_query,
    routes_users,
)
from appliance.server.api.cors import Cors
from appliance.server.auth import principal
from appliance.server.context import ServerContext, now_ns
from appliance.server.outbound import vapid
from appliance.server.settings import ServerSettings, ensure_secret
from appliance.server.store import calltypes, migrations
from appliance.server.store.engine import Store, database_url
from appliance.server.store.users import UserRequest, upsert_user
from appliance.server.web import static_files
from appliance.server.wire import redact, wirejson, wiretime

log = logging.getLogger(__name__)


def error_body(err: APIError) -> dict[str, Any]:
    fields: dict[str, str] = {}
    if err.field:
        fields["field"] = err.field
    if err.cid:
        fields["cid"] = err.cid
    body: dict[str, Any] = {
        "code": err.code,
        "message": str(err.message),
        "StatusCode": err.status_code,
        "details": list(err.details),
        "exception_fields": fields,
        "more_info": "",
        "duration": "0.00ms",
    }
    if getattr(err, "unrecoverable", False):
        body["unrecoverable"] = True  # Stream's SDKs stop retrying
    return body


def _json_error(err: APIError) -> JSONResponse:
    return JSONResponse(error_body(err), status_code=err.status_code)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out or "body"


async def _on_api_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, APIError)
    if err.status_code >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, err)
    return _json_error(err)


async def _on_validation(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    # FastAPI parses a JSON body before it runs the route's dependencies: authenticate first.
    refused = await _credentials_problem(request.scope)
    if refused is not None:
        return _json_error(refused)
    errors = err.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _loc(tuple(first.get("loc", ())))
    details = [f"{_loc(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors[:20]]
    return _json_error(InvalidRequest(f"{field}: {first.get('msg')}", field=field, details=details))


async def _on_http(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, StarletteHTTPException)
    kind = API_ERRORS_BY_STATUS.get(err.status_code, APIError)
    message = "no such route" if err.status_code == 404 else str(err.detail)
    api = kind(f"{message}: {request.method} {request.url.path}", status_code=err.status_code)
    return _json_error(api)


async def _on_store(request: Request, err: Exception) -> JSONResponse:
    log.error("%s %s: database failure: %s", request.method, request.url.path, err)
    return _json_error(APIError("the database is unavailable", status_code=503))


async def _on_unexpected(request: Request, err: Exception) -> JSONResponse:
    log.exception("%s %s failed", request.method, request.url.path)
    return _json_error(APIError("internal server error", status_code=500))


# A JSON \u0000 escape (not an escaped backslash followed by "u0000"): PostgreSQL cannot store it.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


async def _credentials_problem(scope: Scope) -> APIError | None:
    """Why this request's credentials are refused, if they are: a request whose body is bad
    and whose credentials are bad too is answered 401, as if the body had been fine."""
    try:
        await principal(Request(scope))
    except APIError as err:
        return err
    return None


def _body_problem(body: bytes) -> InvalidRequest | None:
    if _NUL_ESCAPE.search(body):
        return InvalidRequest("strings may not contain NUL (\\u0000) characters")
    if wirejson.NON_FINITE_HINT_BYTES.search(body) or wirejson.SURROGATE_ESCAPE_BYTES.search(body):
        try:
            wirejson.loads(body)
        except InvalidRequest as err:
            return err
    return None


# The console is plain files from this origin: no inline script, no frames, no other origins.
# no-referrer: a sign-in link carries its token in the query.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class RequestLimits:
    """Every HTTP request: bodies over the limit are 413, bad ones 400 (after the credentials),
    times in JSON answers are RFC 3339 text for a Stream client SDK (``wiretime.py``),
    each response gets the security headers, and an unexpected error is a JSON 500 that keeps
    the connection (Starlette re-raises it to the server, which then resets the connection and
    the client's next request on it). Notes when handling started (for ``duration``)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        client_name = None
        for name, value in scope.get("headers", ()):
            if name == b"x-stream-client":
                client_name = value[:128].decode("latin-1")
        try:
            with wiretime.responses_in_rfc3339(wiretime.wants_rfc3339(client_name)):
                await self._handle(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise  # half an answer: only closing the connection tells the client
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            err = APIError("internal server error", status_code=500)
            await _json_error(err)(scope, receive, send_with_headers)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["started"] = time.perf_counter()
        limit = self.max_body_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    err = PayloadTooLarge(f"request body over the limit of {limit} bytes")
                    await _json_error(err)(scope, receive, send)
                    return
        if scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        # Bodies are small (JSON); reading one fully here lets an oversized one be answered 413
        # before the framework starts parsing it (it would turn any read error into a 400).
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                err = PayloadTooLarge(f"request body over the limit of {limit} bytes")
                await _json_error(err)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = _body_problem(body)
        if problem is not None:
            refused = await _credentials_problem(scope) or problem
            await _json_error(refused)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(settings: ServerSettings, *, clock: Clock | None = None) -> FastAPI:
    """The call server. Config mistakes (call-types file, secret) raise ``ConfigError`` here."""
    settings = ensure_secret(settings)
    the_clock: Clock = clock or SystemClock()
    redact.install()  # before the first request line reaches the access log
    if settings.call_types is not None:
        calltypes.load_file(settings.call_types)
    figures = metrics.ServerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(database_url(settings.database, settings.state_dir))
        # Move an older database forward before the store checks its version.
        await migrations.upgrade(store.engine)
        await store.open()
        ctx = ServerContext(store=store, clock=the_clock, settings=settings, metrics=figures)
        figures.live.bind(store.engine)
        app.state.ctx = ctx
        try:
            now = now_ns(the_clock)
            async with store.begin() as conn:
                await migrations.serialise_replicas(conn)
                await calltypes.seed(conn, settings.call_types, now)
                for user in settings.users:
                    await upsert_user(conn, UserRequest.model_validate(user.model_dump()), now)
            key = await vapid.load_or_create(store, settings.push.vapid_subject, now)
            await wiring.start(ctx, key)
            log.info("call server ready (%r, api_key %s)", store, settings.api_key)
            try:
                yield
            finally:
                await wiring.stop(ctx)
        finally:
            await store.close()

    app = FastAPI(
        title="appliance call server",
        version="0.1.0",
        lifespan=lifespan,
        # Swagger UI would load its script from a public CDN on the console's origin.
        docs_url=None,
        redoc_url=None,
        default_response_class=wirejson.StrictJSONResponse,
    )
    app.state.settings = settings
    app.state.metrics = figures
    app.add_middleware(RequestLimits, max_body_bytes=settings.limits.max_body_bytes)
    # Around the limits: a 413 or 400 they answer is timed too.
    app.add_middleware(metrics.RequestMetrics, metrics=figures)
    # Outermost: a preflight is answered before the limits look at it.
    app.add_middleware(Cors, allowed_origins=settings.cors.allowed_origins)
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(StoreError, _on_store)
    app.add_exception_handler(Exception, _on_unexpected)

    @app.get("/healthz", tags=["health"])
    async def healthz(request: Request) -> dict[str, Any]:
        """This replica can serve: its loop answers and its database answers ``SELECT 1``
        within 2 s on a connection of its own, not behind the pool (store/health.py)."""
        ctx: ServerContext = request.app.state.ctx
        await ctx.store.health.check()
        return {"ok": True, "time": now_ns(ctx.clock)}

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics_text(request: Request) -> Response:
        """Prometheus text format; for ``metrics.allow_from`` addresses and the metrics token."""
        refused = metrics.allowed(request.scope, settings.metrics)
        if refused is not None:
            raise refused
        return Response(figures.exposition(), media_type=metrics.CONTENT_TYPE)

    app.include_router(routes_users.router)
    app.include_router(routes_calls.router)
    app.include_router(routes_members.router)
    app.include_router(routes_calltypes.router)
    app.include_router(routes_query.router)
    app.include_router(routes_clientevents.router)
    app.include_router(routes_devices.router)
    wiring.install(app)
    web_files = static_files(test_pages=settings.test_pages)
    if web_files is not None:
        app.mount("/", web_files, name="web")
    return app
