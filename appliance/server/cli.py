"""``appliance serve | token | users``: run the call server, mint tokens, manage users."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.errors import ConfigError, InvalidRequest

# Building the parser (every ``appliance`` command, ``press`` and ``status`` too) imports only
# this module's top: pydantic, fastapi and SQLAlchemy are imported by the commands that use them.
if TYPE_CHECKING:
    from types import FrameType

    from appliance.server.settings import ServerSettings

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "config/server.yaml"


def _port(text: str) -> int:
    """A TCP port for ``--port`` (0 = any free port); anything else is a one-line usage error."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0..65535)")
    return port


def _ttl(text: str) -> float:
    """Seconds a token lives: a token that is born expired is a mistake, not a token."""
    try:
        ttl = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not ttl > 0 or ttl == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return ttl


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the call server")
    serve.add_argument("--config", default=DEFAULT_CONFIG, help="server YAML (default %(default)s)")
    serve.add_argument("--host", help="listen address (overrides the config)")
    serve.add_argument("--port", type=_port, help="listen port (overrides the config)")
    serve.set_defaults(func=cmd_serve)

    token = subparsers.add_parser("token", help="print a user token (or a server token)")
    token.add_argument("--config", default=DEFAULT_CONFIG)
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="user id the token is for")
    who.add_argument("--server", action="store_true", help="a server token (full access)")
    token.add_argument("--ttl", type=_ttl, help="seconds until it expires (default: never)")
    token.add_argument(
        "--call",
        action="append",
        dest="call_cids",
        metavar="CID",
        help="pin the token to this call cid (repeatable)",
    )
    token.add_argument("--link", action="store_true", help="print a console sign-in link instead")
    token.set_defaults(func=cmd_token)

    users = subparsers.add_parser("users", help="add or list users")
    users_sub = users.add_subparsers(dest="users_command", metavar="ACTION")
    users_sub.required = True
    add = users_sub.add_parser("add", help="create or update a user")
    add.add_argument("id")
    add.add_argument("--config", default=DEFAULT_CONFIG)
    add.add_argument("--name")
    add.add_argument("--role", default=None, help="user or admin")
    add.add_argument("--team", action="append", dest="teams", metavar="TEAM")
    add.add_argument(
        "--custom",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="custom field; VALUE is JSON when it parses, else a string",
    )
    add.set_defaults(func=cmd_users_add)
    ls = users_sub.add_parser("list", help="list users")
    ls.add_argument("--config", default=DEFAULT_CONFIG)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_users_list)


def _load(path: str) -> ServerSettings:
    """The server config; a config that names no ``state_dir`` gets systemd's
    ``$STATE_DIRECTORY``, else ``./state``, else the installed unit's /var/lib/appliance-server."""
    from appliance.server.settings import load_settings
    from appliance.statedir import SERVER_SYSTEM_STATE, default_state_dir

    return load_settings(path, state_dir=default_state_dir(SERVER_SYSTEM_STATE))


def check_server_config(path: str) -> tuple[ServerSettings, list[Path]]:
    """``appliance check`` of a server config: the settings and the call types file load; the
    files it names (call types, TLS) come back for ``--files``."""
    from appliance.server.settings import TlsFiles
    from appliance.server.store import calltypes

    settings = _load(path)
    files: list[Path] = []
    if settings.call_types is not None:
        if not settings.call_types.exists():
            raise ConfigError(f"file {str(settings.call_types)!r} does not exist", file=path)
        calltypes.load_file(settings.call_types)
        files.append(settings.call_types)
    if isinstance(settings.tls, TlsFiles):
        files += [settings.tls.cert, settings.tls.key]
    return settings, files


def _settings(args: argparse.Namespace) -> ServerSettings:
    from appliance.server.settings import ensure_secret

    return ensure_secret(_load(args.config))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from appliance.server.app import create_app
    from appliance.statedir import check_writable

    settings = _load(args.config)
    update: dict[str, Any] = {}
    if args.host:
        update["host"] = args.host
    if args.port is not None:
        update["port"] = args.port
    settings = settings.model_copy(update=update)
    check_writable(settings.state_dir)
    app = create_app(settings)

    class Server(uvicorn.Server):
        draining: asyncio.Task[None] | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # From SIGTERM on this replica handles no new deadline (the others do, or the next
            # start): the graceful shutdown that follows must not cut one between its commit
            # and its publish. A flag only: this runs in the signal handler.
            svc = getattr(getattr(app.state, "ctx", None), "realtime", None)
            if svc is not None:
                svc.scheduler.stop_taking()
            # Only in a fleet (PostgreSQL fan-out): a lone server's devices have nowhere to go.
            if (
                sig == signal.SIGTERM
                and svc is not None
                and svc.fanout is not None
                and settings.ws_drain_seconds > 0
                and self.started
                and not self.should_exit
                and self.draining is None
            ):
                # First SIGTERM: drain, then the graceful shutdown (a second signal: at once).
                loop = asyncio.get_event_loop()
                loop.call_soon_threadsafe(self._drain, svc.hub)
                return
            super().handle_exit(sig, frame)

        def _drain(self, hub: Any) -> None:
            if self.draining is None and not self.should_exit:
                self.draining = asyncio.get_running_loop().create_task(
                    drain(self, hub, settings.ws_drain_seconds), name="drain"
                )

    server = Server(uvicorn_config(app, settings))
    log.info("serving on %s", settings.public_base_url())
    return asyncio.run(_serve(server, app, settings.public_base_url()))


async def drain(server: Any, hub: Any, seconds: float) -> None:
    """A replica told to stop (rolling restart) stops listening at once, so the proxy sends new
    connections to the others (a refused connect marks it down, ``deploy/haproxy.cfg``); its
    requests in progress and its WebSockets go on, and the sockets are closed a few at a time
    over ``seconds`` (``hub.drain``) before uvicorn's graceful shutdown. Closing a third of the
    fleet at once sent every device to the replica with the fewest connections (the one just
    restarted) in the same second: their handshakes waited their turn there for 10-20 s."""
    try:
        for listener in server.servers:
            listener.close()
        await hub.drain(seconds)
    except Exception:
        log.exception("drain failed: stopping at once")
    finally:
        server.should_exit = True


def uvicorn_config(app: Any, settings: ServerSettings) -> Any:
    """uvicorn's config for ``appliance serve``. ``log_config=None``: uvicorn would otherwise
    ``dictConfig`` its own, closing every handler the CLI set up (the journal's too); its
    loggers propagate to ours instead."""
    import uvicorn

    from appliance.server.api.httpguard import uvicorn_options
    from appliance.server.tls import tls_files

    tls = tls_files(settings)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
        log_config=None,
        log_level=logging.getLevelName(logging.getLogger().level).lower(),
        timeout_graceful_shutdown=5,
        proxy_headers=True,
        ws_per_message_deflate=settings.ws_compression,
        **uvicorn_options(settings),
    )


async def _serve(server: Any, app: Any, url: str) -> int:
    """Run uvicorn under systemd's notify protocol: READY=1 once the socket listens and the
    store answers, WATCHDOG=1 only while both stay true, STOPPING=1 on the way out."""
    from appliance.clock import SystemClock
    from appliance.sdnotify import Notifier

    notifier = Notifier.from_env()
    notifier.status("starting")
    healthy = _HealthProbe(server, app)
    # uvicorn re-raises a captured SIGTERM once it has shut down gracefully; with the default
    # handler that kills us before STOPPING=1 and a clean exit, so make that re-raise a no-op.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    serving = asyncio.create_task(_run_uvicorn(server), name="uvicorn")
    watchdog: asyncio.Task[None] | None = None
    try:
        # uvicorn.Server exposes only a `started` flag, no event to wait on
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started:
            await healthy.refresh()
            _freeze_startup_heap()
            notifier.ready(f"serving on {url}")
            watchdog = asyncio.create_task(
                notifier.run_watchdog(healthy.check, SystemClock()), name="watchdog"
            )
        code = await serving
    finally:
        notifier.stopping()
        if watchdog is not None:
            watchdog.cancel()
        notifier.close()
    return code if server.started else (code or 1)


def _freeze_startup_heap() -> None:
    """What exists once the server serves (modules, the app, SQLAlchemy's and pydantic's
    structures: ~135,000 objects) lives as long as the process: moved out of the cyclic
    collector's reach, a full collection no longer walks it (one walk took 50-450 ms on a loaded
    2-core machine, a pause that fell inside a ring's fan-out)."""
    gc.collect()
    gc.freeze()
    log.info(
        "startup heap frozen: %d objects left out of garbage collection", gc.get_freeze_count()
    )


async def _run_uvicorn(server: Any) -> int:
    try:
        await server.serve()
    except SystemExit as err:
        # uvicorn calls sys.exit() when it cannot bind or the app's startup fails; it has
        # already logged why in one line.
        return err.code if isinstance(err.code, int) else 1
    return 0


class _HealthProbe:
    """Healthy = uvicorn is serving and the store answered a ``SELECT 1`` within the last
    probe period. The probe runs on the loop: a wedged loop stops the watchdog pings too."""

    def __init__(self, server: Any, app: Any) -> None:
        self._server = server
        self._app = app
        self._store_ok = False
        self._probe: asyncio.Task[None] | None = None

    async def refresh(self) -> None:

        ctx = getattr(self._app.state, "ctx", None)
        if ctx is None:
            self._store_ok = False
            return
        try:
            await ctx.store.health.check()  # the /healthz check: not behind the pool
            self._store_ok = True
        except Exception as err:  # any store failure means "unhealthy", logged once per probe
            log.error("health probe: store unavailable: %s", err)
            self._store_ok = False

    def check(self) -> bool:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self.refresh())
        return bool(self._server.started and not self._server.should_exit and self._store_ok)


def cmd_token(args: argparse.Namespace) -> int:
    from appliance.clock import SystemClock
    from appliance.server.auth import create_token

    settings = _settings(args)
    assert settings.api_secret
    if args.server:
        print(create_token(settings.api_secret))
        return 0
    if not asyncio.run(_user_exists(settings, args.user)):
        # the server refuses a token of a user nobody created (401): say so now, not at the door
        raise InvalidRequest(
            f"user {args.user} does not exist: create it first (`appliance users add "
            f"{args.user}`, or `users:` in {args.config}), then mint its token",
            field="--user",
        )
    token = create_token(
        settings.api_secret, args.user, clock=SystemClock(), ttl=args.ttl, call_cids=args.call_cids
    )
    if args.link:
        print(f"{settings.public_base_url()}/?api_key={settings.api_key}&token={token}")
    else:
        print(token)
    return 0


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _custom(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--custom {pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value, parse_constant=_not_json)
        except ValueError:  # not JSON (NaN and Infinity are not JSON either): a string
            out[key] = value
    return out


async def _user_exists(settings: ServerSettings, user_id: str) -> bool:
    """Whether the server would accept a token of ``user_id``: a seed user of the config (created
    on the server's next start) or a user in its database."""
    from appliance.server.store.users import missing_users

    if any(seed.id == user_id for seed in settings.users):
        return True

    async def work(store: Any) -> bool:
        async with store.connect() as conn:
            return not await missing_users(conn, [user_id])

    found: bool = await _with_store(settings, work)
    return found


async def _with_store(settings: ServerSettings, work: Any) -> Any:
    from appliance.server.store import migrations
    from appliance.server.store.engine import Store, database_url

    store = Store(database_url(settings.database, settings.state_dir))
    await migrations.upgrade(store.engine)
    await store.open()
    try:
        return await work(store)
    finally:
        await store.close()


def cmd_users_add(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from appliance.clock import SystemClock
    from appliance.server.context import now_ns
    from appliance.server.store.users import UserRequest, upsert_user

    settings = _settings(args)
    try:
        user = UserRequest(
            id=args.id,
            name=args.name,
            role=args.role,
            teams=args.teams,
            custom=_custom(args.custom) or None,
        )
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{where}: {first['msg']}", field=where) from None

    async def work(store: Any) -> None:
        async with store.begin() as conn:
            await upsert_user(conn, user, now_ns(SystemClock()))

    asyncio.run(_with_store(settings, work))
    print(f"user {args.id} saved")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from appliance.server.store.schema import users

    settings = _settings(args)

    async def work(store: Any) -> list[dict[str, Any]]:
        async with store.connect() as conn:
            rows = await conn.execute(select(users).order_by(users.c.id))
            return [dict(r) for r in rows.mappings()]

    rows = asyncio.run(_with_store(settings, work))
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        teams = ",".join(r["teams"] or []) or "-"
        print(f"{r['id']:<24} {r['role']:<8} teams={teams:<16} name={r['name'] or ''}")
    return 0
