"""``Client``: the call API in async Python, with one live connection shared by every consumer.

::

    async with Client("http://127.0.0.1:3040", api_key, token) as client:
        call = client.call("default", "door-1")
        await call.create(member_ids=["alice"], ring=True)
        async for event in client.events({"call.accepted", "call.ended"}):
            ...

The REST side needs no connection; the WebSocket starts on the first :meth:`Client.events`,
:meth:`Client.on`, :meth:`Client.connect` or :meth:`Call.join`, and from then on reconnects by
itself until :meth:`Client.aclose`.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from pydantic import BaseModel

from appliance.calls import events as ev
from appliance.client.backoff import Backoff, RandomSource
from appliance.client.call import Call, Sort, sort_param
from appliance.client.connection import Connection
from appliance.client.events import (
    CONNECTION_LOST,
    Callback,
    Event,
    EventFilter,
    EventHub,
    Subscription,
)
from appliance.client.models import CallInfo, CallResponse, CallsPage, User
from appliance.client.paging import follow_pages
from appliance.client.rest import RestTransport, TokenProvider
from appliance.client.resync import Resync, RingLedger
from appliance.clock import Clock, SystemClock
from appliance.errors import APIError, ConfigError

logger = logging.getLogger(__name__)

# Calls whose last known state is kept for the resync (joined calls, rung calls, fetched calls).
_SNAPSHOT_LIMIT = 256
# Open calls read by a resync, 100 a page (a device is a member of a handful).
_OPEN_CALL_PAGES = 10
# Rings missed while away are looked for from a little before the last frame the server sent
# (a ring committed just before it may still have been on its way), and at most this far back.
_AWAY_SLACK_NS = 10 * 1_000_000_000
_MISSED_LOOKBACK_NS = 3600 * 1_000_000_000
# Events after which a call not joined here needs no resync.
_CALL_OVER = frozenset({ev.CALL_ENDED, ev.CALL_DELETED})
# Frame id prefix of participant.attach, so that a refusal can be matched to its call.
_ATTACH = "attach:"


def check_base_url(base_url: str) -> None:
    """A mistyped URL is a one-line config error here, not a traceback from the first request."""
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"'{base_url}' is not an http(s) URL", key="base_url")
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises ValueError when the port is out of range or not a number
    except ValueError as err:
        raise ConfigError(f"'{base_url}' is not a valid URL ({err})", key="base_url") from err
    if not parts.hostname:
        raise ConfigError(f"'{base_url}' has no host", key="base_url")


class ClientConfig(BaseModel):
    """What a client needs; the daemon's and the CLI's configs hand these fields over."""

    base_url: str
    api_key: str
    token: str
    user_id: str | None = None
    ca_file: str | None = None
    timeout: float = 10.0
    heartbeat_interval: float = 10.0


def user_id_of(token: str) -> str | None:
    """The ``user_id`` claim of a JWT (read, not verified: the server verifies it)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as err:
        raise ConfigError(f"token is not a JWT ({err})", key="token") from err
    value = claims.get("user_id")
    return str(value) if value else None


class Client:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        token: str,
        *,
        user_id: str | None = None,
        http: httpx.AsyncClient | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
        token_provider: TokenProvider | None = None,
        clock: Clock | None = None,
        random: RandomSource | None = None,
        backoff: Backoff | None = None,
        heartbeat_interval: float = 10.0,
    ) -> None:
        check_base_url(base_url)
        self.user_id = user_id or user_id_of(token)
        self.rest = RestTransport(
            base_url,
            api_key,
            token,
            http=http,
            ca_file=ca_file,
            timeout=timeout,
            token_provider=token_provider,
            clock=clock,
        )
        self.clock = clock or SystemClock()
        self.hub = EventHub()
        self.ledger = RingLedger(self.user_id)
        self.snapshots: OrderedDict[str, CallInfo] = OrderedDict()
        self._joined_calls: dict[str, Call] = {}
        # The server's time (ns) of the last frame before the connection dropped, until a
        # resync has looked for the rings missed since.
        self._away_since: int | None = None
        self.connection = Connection(
            self.rest,
            self.hub,
            user_id=self.user_id,
            clock=self.clock,
            backoff=backoff or Backoff(random=random),
            heartbeat_interval=heartbeat_interval,
            connect_timeout=timeout,
            ca_file=ca_file,
            on_connected=self._on_connected,
            admit=self._admit,
        )
        self.resync = Resync(
            self.user_id,
            self.ledger,
            self.snapshots,
            get_call=self._get_call,
            open_calls=self._open_calls,
            admit=self._admit,
            emit=self.hub.emit,
        )

    @classmethod
    def from_config(cls, config: ClientConfig | Mapping[str, Any] | Any, **kwargs: Any) -> Client:
        """From a :class:`ClientConfig`, a mapping, or any object with those attributes
        (``url`` is accepted for ``base_url``)."""
        if not isinstance(config, ClientConfig):
            if not isinstance(config, Mapping):
                names = (*ClientConfig.model_fields, "url")
                config = {
                    n: getattr(config, n) for n in names if getattr(config, n, None) is not None
                }
            data = dict(config)
            if "base_url" not in data and "url" in data:
                data["base_url"] = data.pop("url")
            config = ClientConfig.model_validate(data)
        options = config.model_dump(exclude={"base_url", "api_key", "token"})
        options.update(kwargs)
        return cls(config.base_url, config.api_key, config.token, **options)

    @property
    def base_url(self) -> str:
        return self.rest.base_url

    def call(self, call_type: str, call_id: str = "") -> Call:
        """The call ``call_type:call_id``; an empty id becomes a fresh UUID."""
        return Call(self, call_type, call_id or str(uuid.uuid4()))

    async def query_calls(
        self,
        filters: dict[str, Any] | None = None,
        sort: Sort | None = None,
        limit: int = 25,
        next: str | None = None,
        prev: str | None = None,
    ) -> CallsPage:
        body = {
            "filter_conditions": filters,
            "sort": sort_param(sort),
            "limit": limit,
            "next": next,
            "prev": prev,
        }
        body = {key: value for key, value in body.items() if value is not None}
        answer = await self.rest.request("POST", "/api/v2/video/calls", json=body)
        return CallsPage.model_validate(answer)

    async def iter_calls(
        self,
        filters: dict[str, Any] | None = None,
        sort: Sort | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[CallResponse]:
        """Every matching call, page after page (``async for c in client.iter_calls(...)``)."""

        async def fetch(cursor: str | None) -> tuple[list[CallResponse], str | None]:
            page = await self.query_calls(filters, sort, limit=page_size, next=cursor)
            return page.calls, page.next

        async for call in follow_pages(fetch):
            yield call

    async def upsert_users(self, *users: User | dict[str, Any]) -> dict[str, User]:
        """Create or update users (``User(id="alice", name="Alice", role="user")``)."""
        payload = {}
        for user in users:
            model = user if isinstance(user, User) else User.model_validate(user)
            payload[model.id] = model.model_dump(
                mode="json", exclude_none=True, exclude={"created_at", "updated_at", "online"}
            )
        answer = await self.rest.request("POST", "/api/v2/users", json={"users": payload})
        return {uid: User.model_validate(u) for uid, u in (answer.get("users") or {}).items()}

    # --- the one connection -------------------------------------------------------------

    async def connect(self, wait: float | None = 10.0) -> str:
        """Start the WebSocket (once) and wait until it is up; returns the connection id."""
        return await self.connection.wait_connected(wait)

    def events(
        self,
        types: Iterable[str] | str | None = None,
        *,
        call_cid: str | None = None,
        where: EventFilter | None = None,
        maxsize: int = 1000,
    ) -> Subscription:
        """Subscribe (``async for event in client.events({"call.ring"})``); starts the connection."""
        sub = self.hub.subscribe(types, call_cid=call_cid, where=where, maxsize=maxsize)
        self.connection.start()
        return sub

    def on(self, types: Iterable[str] | str | None, callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` for each matching event; returns the function that removes it."""
        remove = self.hub.on(types, callback)
        self.connection.start()
        return remove

    async def send_signal(self, call_cid: str, to: str, signal: dict[str, Any]) -> None:
        await self.connection.send_signal(call_cid, to, signal)

    async def aclose(self) -> None:
        await self.connection.close()
        self.hub.close()
        await self.rest.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Client({self.base_url}, user={self.user_id}, {self.connection!r})"

    # --- bookkeeping for the resync -------------------------------------------------------

    def call_seen(self, call: CallInfo) -> None:
        """A fresh copy of a call: kept if the resync tracks it (:class:`CallHost`)."""
        if call.cid in self.snapshots:
            self.snapshots[call.cid] = call
            self.snapshots.move_to_end(call.cid)

    def _track(self, call: CallInfo) -> None:
        self.snapshots[call.cid] = call
        self.snapshots.move_to_end(call.cid)
        while len(self.snapshots) > _SNAPSHOT_LIMIT:
            self.snapshots.popitem(last=False)

    def call_joined(self, call: Call) -> None:
        self._joined_calls[call.cid] = call
        if call.state is not None:
            self._track(call.state.call)

    def call_left(self, call: Call) -> None:
        self._joined_calls.pop(call.cid, None)
        if call.cid not in self.ledger.ringing:
            self.snapshots.pop(call.cid, None)

    def _admit(self, event: Event) -> bool:
        if not self.ledger.admit(event):
            return False
        if event.type == CONNECTION_LOST and self._away_since is None:
            self._away_since = self.connection.server_time_ns
        if event.type == ev.ERROR:
            self._attach_refused(event)
        if event.call is not None:
            if event.type == ev.CALL_RING:
                self._track(event.call)
            else:
                self.call_seen(event.call)
        cid = event.cid
        if event.type in _CALL_OVER and cid is not None and cid not in self._joined_calls:
            # Nothing left to resync for a call that ended here; its next ring tracks it again.
            self.snapshots.pop(cid, None)
        return True

    async def _reattach(self) -> None:
        """Bind my participants to the new connection before the grace period runs out."""
        for call in list(self._joined_calls.values()):
            if call.session_id is None:
                continue
            frame = {
                "type": "participant.attach",
                "id": f"{_ATTACH}{call.cid}",
                "call_cid": call.cid,
                "session_id": call.session_id,
            }
            try:
                await self.connection.send(frame)
                logger.info("%r: re-attached %s to %s", self, call.session_id, call.cid)
            except APIError as err:
                logger.warning("%r: cannot re-attach %s (%s)", self, call.cid, err)

    def _attach_refused(self, event: Event) -> None:
        extra = event.model_extra or {}
        reply_to = extra.get("reply_to")
        if not isinstance(reply_to, str) or not reply_to.startswith(_ATTACH):
            return
        call = self._joined_calls.pop(reply_to[len(_ATTACH) :], None)
        if call is not None:
            # Too late (grace period over, or the session ended): the resync reports the rest.
            logger.warning("%r: %s not re-attached (%s)", self, call, extra.get("message"))
            call.session_id = None

    async def _get_call(self, cid: str) -> CallResponse:
        call_type, call_id = cid.split(":", 1)
        return await Call(self, call_type, call_id).get()

    def missed_window(self) -> int | None:
        """Since when (server time, ns) a resync looks for rings missed while away: ``None``
        when the connection did not drop (first connect) or no server time is known."""
        away = self._away_since
        now = self.connection.server_time_ns
        if away is None or now is None:
            return None
        return max(away - _AWAY_SLACK_NS, now - _MISSED_LOOKBACK_NS)

    async def _open_calls(self, missed_since: int | None = None) -> list[CallResponse]:
        """The calls I am a member of that have not ended (where a ring for me can be live),
        and with ``missed_since`` also those changed since then (a ring that began and ended
        while away: the server bumps a call's ``updated_at`` on each ring)."""
        filters: dict[str, Any] = {
            "members": {"$in": [self.user_id]},
            "ended_at": {"$exists": False},
        }
        if missed_since is not None:
            filters = {
                "members": {"$in": [self.user_id]},
                "$or": [
                    {"ended_at": {"$exists": False}},
                    {"updated_at": {"$gte": missed_since}},
                ],
            }
        found: list[CallResponse] = []
        cursor: str | None = None
        for _ in range(_OPEN_CALL_PAGES):
            page = await self.query_calls(
                filters, sort=[("created_at", -1)], limit=100, next=cursor
            )
            found.extend(page.calls)
            if not page.next or not page.calls:
                break
            cursor = page.next
        return found

    async def _on_connected(self, reconnected: bool) -> None:
        if reconnected:
            await self._reattach()
        # Also on the first connect: a ring may have started before the device came up.
        delay = 0.5
        while True:
            try:
                await self.resync.run(self.missed_window())
                self._away_since = None
                return
            except APIError as err:
                logger.warning("%r: resync failed (%s), retrying in %.1f s", self, err, delay)
            await self.clock.sleep(delay)
            delay = min(delay * 2, 30.0)
