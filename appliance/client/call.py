"""``Call``: one call addressed by ``type`` + ``id``, with the seed's verbs (the call API in
README.md).

Sort form, everywhere: a list of ``(field, direction)`` pairs, direction ``1`` (ascending) or
``-1`` (descending), e.g. ``sort=[("created_at", -1)]``; a single pair is accepted too.
Filters are the server's MongoDB-style ``filter_conditions`` dicts, e.g.
``{"role": "admin", "custom.color": {"$in": ["red", "blue"]}}``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from appliance.client.events import Callback, EventFilter, Subscription
from appliance.client.models import CallInfo, CallResponse, JoinResponse, Member, MembersPage
from appliance.client.paging import follow_pages
from appliance.client.rest import RestTransport
from appliance.errors import InvalidRequest

logger = logging.getLogger(__name__)

SortPair = tuple[str, int]
Sort = SortPair | Sequence[SortPair]


class MemberRequest(BaseModel):
    """A member to add or update: ``MemberRequest(user_id="bob", role="admin", custom={...})``."""

    user_id: str
    role: str | None = None
    custom: dict[str, Any] | None = None


MemberLike = MemberRequest | dict[str, Any]


def sort_param(sort: Sort | None) -> list[dict[str, Any]] | None:
    if sort is None:
        return None
    pairs: Sequence[Any] = [sort] if isinstance(sort, tuple) else sort
    result = []
    for pair in pairs:
        if (
            not isinstance(pair, tuple | list)
            or len(pair) != 2
            or not isinstance(pair[0], str)
            or pair[1] not in (1, -1)
        ):
            raise InvalidRequest(
                f"sort: expected (field, 1 | -1) pairs, got {pair!r}", field="sort"
            )
        result.append({"field": pair[0], "direction": pair[1]})
    return result


def members_param(
    member_ids: Iterable[str] | None, members: Iterable[MemberLike] | None
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = [{"user_id": uid} for uid in member_ids or ()]
    for member in members or ():
        request = member if isinstance(member, MemberRequest) else MemberRequest(**member)
        result.append(request.model_dump(exclude_none=True))
    return result


def timestamp_param(value: datetime | str | None) -> str | None:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def settings_param(settings: BaseModel | dict[str, Any] | None) -> dict[str, Any] | None:
    if isinstance(settings, BaseModel):
        return settings.model_dump(exclude_none=True)
    return settings


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}


class CallHost(Protocol):
    """What a :class:`Call` needs of the client that made it (:class:`appliance.client.Client`
    is one): the REST transport, the one event connection, and the bookkeeping the client's
    resync keeps of the calls it knows and the calls it joined."""

    rest: RestTransport

    async def connect(self, wait: float | None = 10.0) -> str: ...

    def events(
        self,
        types: Iterable[str] | str | None = None,
        *,
        call_cid: str | None = None,
        where: EventFilter | None = None,
        maxsize: int = 1000,
    ) -> Subscription: ...

    def on(self, types: Iterable[str] | str | None, callback: Callback) -> Callable[[], None]: ...

    async def send_signal(self, call_cid: str, to: str, signal: dict[str, Any]) -> None: ...

    def call_seen(self, call: CallInfo) -> None:
        """A fresh copy of a call the client tracks."""

    def call_joined(self, call: Call) -> None: ...

    def call_left(self, call: Call) -> None: ...


class Call:
    def __init__(self, client: CallHost, call_type: str, call_id: str) -> None:
        self.client = client
        self.type = call_type
        self.id = call_id
        self.cid = f"{call_type}:{call_id}"
        self.state: CallResponse | None = None
        self.session_id: str | None = None

    @property
    def _path(self) -> str:
        return f"/api/v2/video/call/{self.type}/{self.id}"

    async def _call(
        self, method: str, suffix: str = "", json: Any = None, **params: Any
    ) -> dict[str, Any]:
        return await self.client.rest.request(
            method, self._path + suffix, json=json, params=params or None, cid=self.cid
        )

    def _remember(self, body: dict[str, Any], model: type[CallResponse] = CallResponse) -> Any:
        response = model.model_validate(body)
        self.state = response
        self.client.call_seen(response.call)
        return response

    async def create(
        self,
        member_ids: Iterable[str] | None = None,
        members: Iterable[MemberLike] | None = None,
        custom: dict[str, Any] | None = None,
        settings: BaseModel | dict[str, Any] | None = None,
        starts_at: datetime | str | None = None,
        team: str | None = None,
        ring: bool = False,
        notify: bool = False,
        video: bool | None = None,
        *,
        created_by_id: str | None = None,
        members_limit: int | None = None,
    ) -> CallResponse:
        """Get or create: an existing call ignores ``data`` (members change through
        :meth:`update_members`) but rings when ``ring`` is set."""
        data = _drop_none(
            {
                "created_by_id": created_by_id,
                "members": members_param(member_ids, members) or None,
                "custom": custom,
                "settings_override": settings_param(settings),
                "starts_at": timestamp_param(starts_at),
                "team": team,
            }
        )
        body = _drop_none(
            {
                "data": data,
                "ring": ring,
                "notify": notify,
                "video": video,
                "members_limit": members_limit,
            }
        )
        response: CallResponse = self._remember(await self._call("POST", json=body))
        logger.info("Call(%s) %s", self.cid, "created" if response.created else "fetched")
        return response

    get_or_create = create

    async def get(
        self, *, members_limit: int | None = None, ring: bool | None = None
    ) -> CallResponse:
        body = await self._call("GET", members_limit=members_limit, ring=ring)
        response: CallResponse = self._remember(body)
        return response

    async def update(
        self,
        custom: dict[str, Any] | None = None,
        settings: BaseModel | dict[str, Any] | None = None,
        starts_at: datetime | str | None = None,
    ) -> CallResponse:
        body = _drop_none(
            {
                "custom": custom,
                "settings_override": settings_param(settings),
                "starts_at": timestamp_param(starts_at),
            }
        )
        response: CallResponse = self._remember(await self._call("PATCH", json=body))
        return response

    async def update_members(
        self,
        members: Iterable[MemberLike] | None = None,
        member_ids: Iterable[str] | None = None,
    ) -> list[Member]:
        """Add or update members (role, custom); returns them as the server stored them."""
        body = {"update_members": members_param(member_ids, members)}
        answer = await self._call("POST", "/members", json=body)
        return [Member.model_validate(m) for m in answer.get("members") or []]

    async def remove_members(self, member_ids: Iterable[str]) -> None:
        await self._call("POST", "/members", json={"remove_members": list(member_ids)})

    async def query_members(
        self,
        filters: dict[str, Any] | None = None,
        sort: Sort | None = None,
        limit: int = 25,
        next: str | None = None,
        prev: str | None = None,
    ) -> MembersPage:
        body = _drop_none(
            {
                "type": self.type,
                "id": self.id,
                "filter_conditions": filters,
                "sort": sort_param(sort),
                "limit": limit,
                "next": next,
                "prev": prev,
            }
        )
        answer = await self.client.rest.request(
            "POST", "/api/v2/video/call/members", json=body, cid=self.cid
        )
        return MembersPage.model_validate(answer)

    async def iter_members(
        self,
        filters: dict[str, Any] | None = None,
        sort: Sort | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Member]:
        """Every matching member, page after page (``async for member in call.iter_members()``)."""

        async def fetch(cursor: str | None) -> tuple[list[Member], str | None]:
            page = await self.query_members(filters, sort, limit=page_size, next=cursor)
            return page.members, page.next

        async for member in follow_pages(fetch):
            yield member

    async def join(
        self,
        create: bool = False,
        ring: bool = False,
        *,
        data: dict[str, Any] | None = None,
        location: str | None = None,
        connect_timeout: float = 10.0,
    ) -> JoinResponse:
        """Join the live session (starting one if none is live) as a participant bound to this
        client's WebSocket; ``session_id`` of the answer is my signaling address."""
        connection_id = await self.client.connect(connect_timeout)
        body = _drop_none(
            {
                "create": create,
                "ring": ring,
                "data": data,
                "location": location,
                "connection_id": connection_id,
            }
        )
        response: JoinResponse = self._remember(
            await self._call("POST", "/join", json=body), JoinResponse
        )
        self.session_id = response.session_id
        self.client.call_joined(self)
        logger.info("Call(%s) joined as %s", self.cid, self.session_id)
        return response

    async def leave(self) -> None:
        body = _drop_none({"session_id": self.session_id})
        try:
            await self._call("POST", "/leave", json=body)
        finally:
            self.client.call_left(self)
            logger.info("Call(%s) left (%s)", self.cid, self.session_id)
            self.session_id = None

    async def ring(
        self, member_ids: Iterable[str] | None = None, video: bool | None = None
    ) -> dict[str, Any]:
        body = _drop_none(
            {"members_ids": list(member_ids) if member_ids is not None else None, "video": video}
        )
        return await self._call("POST", "/ring", json=body)

    async def accept(self) -> dict[str, Any]:
        return await self._call("POST", "/accept", json={})

    async def reject(self, reason: str = "decline") -> dict[str, Any]:
        return await self._call("POST", "/reject", json={"reason": reason})

    async def end(self) -> dict[str, Any]:
        return await self._call("POST", "/mark_ended", json={})

    async def delete(self, hard: bool = False) -> dict[str, Any]:
        return await self._call("POST", "/delete", json={"hard": hard})

    async def send_event(self, custom: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", "/event", json={"custom": custom})

    async def send_signal(self, to: str, signal: dict[str, Any]) -> None:
        await self.client.send_signal(self.cid, to, signal)

    def events(self, types: Iterable[str] | None = None) -> Subscription:
        """This call's events on the client's one connection."""
        return self.client.events(types, call_cid=self.cid)

    def __repr__(self) -> str:
        return f"Call({self.cid})"
