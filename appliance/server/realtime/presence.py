"""Presence: a user is online while any of their WebSocket connections is up, on any replica.

``ctx.presence`` is the ``Presence`` of this replica. Readers (the ``online`` filter
of query users, the user serializer) use ``is_online(user_id)`` and ``online_user_ids()``.
Connections of this replica are counted here; other replicas announce theirs through
``pgnotify`` (``set_remote``/``drop_replica``), so with PostgreSQL the answer covers the fleet.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Presence:
    def __init__(self) -> None:
        self._local: dict[str, int] = {}
        self._remote: dict[str, set[str]] = {}

    def add_local(self, user_id: str) -> None:
        self._local[user_id] = self._local.get(user_id, 0) + 1

    def remove_local(self, user_id: str) -> None:
        left = self._local.get(user_id, 0) - 1
        if left > 0:
            self._local[user_id] = left
        else:
            self._local.pop(user_id, None)

    def local_user_ids(self) -> frozenset[str]:
        return frozenset(self._local)

    def set_remote(self, replica: str, user_id: str, online: bool) -> None:
        users = self._remote.setdefault(replica, set())
        if online:
            users.add(user_id)
        else:
            users.discard(user_id)

    def replace_remote(self, replica: str, user_ids: set[str]) -> None:
        self._remote[replica] = set(user_ids)

    def drop_replica(self, replica: str) -> None:
        if self._remote.pop(replica, None) is not None:
            log.info("presence of replica %s dropped", replica[:8])

    def is_online(self, user_id: str) -> bool:
        if user_id in self._local:
            return True
        return any(user_id in users for users in self._remote.values())

    def online_user_ids(self) -> frozenset[str]:
        out = set(self._local)
        for users in self._remote.values():
            out |= users
        return frozenset(out)

    def __repr__(self) -> str:
        return f"Presence({len(self._local)} local, {len(self.online_user_ids())} online)"
