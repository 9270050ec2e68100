"""The HTTP side of the client: auth headers, one ``httpx.AsyncClient``, errors mapped to ours.

Every request carries ``api_key`` in the query and ``Authorization: <jwt>`` with
``stream-auth-type: jwt`` (README.md, "Call server"). Error answers ``{"code", "message", "StatusCode",
"details"}`` become the :mod:`appliance.errors` tree; network failures, timeouts and 5xx become
``ServerUnavailable``. Every error carries the call cid of the request, where there is one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt

from appliance.clock import Clock, SystemClock
from appliance.errors import (
    API_ERRORS_BY_STATUS,
    APIError,
    AuthenticationError,
    ConfigError,
    ServerUnavailable,
)

logger = logging.getLogger(__name__)

TokenProvider = Callable[[], Awaitable[str]]

# Seconds before a token's ``exp`` at which the refresh hook is asked for a new one.
REFRESH_MARGIN = 60.0


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Verify against the pinned CA (e.g. the appliance's self-signed certificate) or the system's."""
    if ca_file:
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(
                f"cannot load CA certificate {ca_file} ({err.strerror or err})",
                key="ca_file",
                hint="a PEM certificate file, e.g. the server state_dir's tls-self-signed.crt",
            ) from err
    return ssl.create_default_context()


def _field_of(body: dict[str, Any]) -> str | None:
    field = body.get("field")
    if isinstance(field, str):
        return field
    exception_fields = body.get("exception_fields")
    if isinstance(exception_fields, dict) and isinstance(exception_fields.get("field"), str):
        return str(exception_fields["field"])
    for detail in body.get("details") or []:
        if isinstance(detail, dict):
            value = detail.get("field") or detail.get("loc")
            if isinstance(value, list):
                value = ".".join(str(part) for part in value)
            if value:
                return str(value)
    return None


def error_from_response(response: httpx.Response, cid: str | None) -> APIError:
    """The exception for an error answer (status >= 400)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"message": response.text.strip()[:200] or response.reason_phrase}
    message = str(body.get("message") or response.reason_phrase or "error")
    details = body.get("details") if isinstance(body.get("details"), list) else None
    status = response.status_code
    if status >= 500:
        cls: type[APIError] = ServerUnavailable
    else:
        cls = API_ERRORS_BY_STATUS.get(status, APIError)
    return cls(
        message,
        field=_field_of(body),
        cid=cid,
        details=details,
        status_code=status,
    )


class RestTransport:
    """Sends API requests; refreshes the token once on 401 when a provider is set."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        token: str,
        *,
        http: httpx.AsyncClient | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
        token_provider: TokenProvider | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.token = token
        self.token_provider = token_provider
        self.clock = clock or SystemClock()
        self._refresh_lock = asyncio.Lock()
        self._expiry: tuple[str, float | None] = ("", None)
        self._owns_http = http is None
        if http is None:
            verify: ssl.SSLContext | bool = True
            if self.base_url.startswith("https:"):
                verify = tls_context(ca_file)
            http = httpx.AsyncClient(timeout=timeout, verify=verify)
        self.http = http
        self._closed = False

    async def refresh_token(self, stale: str | None = None) -> bool:
        """Ask the token-refresh hook for a fresh token; False when there is no hook.
        ``stale``: the token that was refused; when another task already replaced it, keep theirs."""
        if self.token_provider is None:
            return False
        async with self._refresh_lock:
            if stale is not None and self.token != stale:
                return True
            self.token = await self.token_provider()
        logger.info("RestTransport(%s) token refreshed", self.base_url)
        return True

    def _expires_at(self) -> float | None:
        token, expiry = self._expiry
        if token != self.token:
            try:
                claims = jwt.decode(self.token, options={"verify_signature": False})
                exp = claims.get("exp")
                expiry = float(exp) if isinstance(exp, int | float) else None
            except jwt.PyJWTError:
                expiry = None
            self._expiry = (self.token, expiry)
        return expiry

    async def fresh_token(self) -> str:
        """The token, refreshed first when it expires within ``REFRESH_MARGIN`` seconds
        (a device's token runs out while it is idle; better ask before the server refuses)."""
        expires = self._expires_at()
        if (
            self.token_provider is not None
            and expires is not None
            and expires - self.clock.time() < REFRESH_MARGIN
        ):
            await self.refresh_token(stale=self.token)
        return self.token

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        cid: str | None = None,
    ) -> dict[str, Any]:
        token = await self.fresh_token()
        try:
            return await self._send(method, path, json=json, params=params, cid=cid)
        except AuthenticationError:
            if not await self.refresh_token(stale=token):
                raise
            return await self._send(method, path, json=json, params=params, cid=cid)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any,
        params: dict[str, Any] | None,
        cid: str | None,
    ) -> dict[str, Any]:
        query = {"api_key": self.api_key}
        for key, value in (params or {}).items():
            if value is not None:
                query[key] = str(value).lower() if isinstance(value, bool) else str(value)
        headers = {"Authorization": self.token, "stream-auth-type": "jwt"}
        url = f"{self.base_url}{path}"
        try:
            response = await self.http.request(
                method, url, json=json, params=query, headers=headers
            )
        except httpx.TimeoutException as err:
            raise ServerUnavailable(f"{method} {path}: timed out", cid=cid) from err
        except httpx.TransportError as err:
            raise ServerUnavailable(
                f"{method} {path}: cannot reach {self.base_url} ({err})", cid=cid
            ) from err
        if response.status_code >= 400:
            error = error_from_response(response, cid)
            logger.debug("RestTransport %s %s -> %s %s", method, path, response.status_code, error)
            raise error
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError as err:
            raise ServerUnavailable(f"{method} {path}: answer is not JSON", cid=cid) from err
        return body if isinstance(body, dict) else {"result": body}

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_http:
            await self.http.aclose()
