"""One exception tree for the whole package.

::

    ApplianceError
    ├── ConfigError(ApplianceError, ValueError)        bad YAML / settings; carries file:line
    ├── HardwareError(ApplianceError, RuntimeError)    GPIO, camera, ALSA
    │   └── AudioDeviceError
    │       └── AudioProcessingUnavailable(AudioDeviceError, ImportError)  no WebRTC APM here
    ├── MediaError(ApplianceError, RuntimeError)       WebRTC / codec problems
    ├── LibraryVersionError(ApplianceError, ImportError) a library whose internals we use
    │                                                    is not the version we checked
    ├── StoreError(ApplianceError, RuntimeError)       database failures
    └── APIError(ApplianceError)                       an error answer of the call API
        ├── InvalidRequest(APIError, ValueError)       400, carries .field
        ├── AuthenticationError(APIError)              401
        │   └── TokenExpired                           401, code 40 (Stream's: refresh the token)
        ├── PermissionDenied(APIError, PermissionError) 403
        ├── NotFound(APIError, LookupError)            404
        ├── Conflict(APIError)                         409
        ├── PayloadTooLarge(APIError)                  413
        ├── Unsupported(APIError)                      501, unrecoverable: a client must not retry
        └── ServerUnavailable(APIError, ConnectionError) 5xx, network failures

Library errors are re-raised as ours with ``raise ... from err`` at the boundary.
"""

from __future__ import annotations

from typing import Any


class ApplianceError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ApplianceError, ValueError):
    """A configuration mistake. ``str()`` is one line: ``file:line: key: problem (hint)``."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.key}: " if self.key else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}{key}{self.message}{hint}"


class HardwareError(ApplianceError, RuntimeError):
    """A hardware adapter failed (GPIO, camera, ALSA)."""


class AudioDeviceError(HardwareError):
    """An ALSA device could not be opened or used."""


class AudioProcessingUnavailable(AudioDeviceError, ImportError):
    """WebRTC audio processing (echo cancellation) cannot run: binding missing or failing."""


class MediaError(ApplianceError, RuntimeError):
    """WebRTC or codec failure."""


class LibraryVersionError(ApplianceError, ImportError):
    """An installed library is not the version whose private API a compatibility module was
    written for (raised when that module is imported, like gpiozero's ``BadPinFactory``)."""


class StoreError(ApplianceError, RuntimeError):
    """The database failed."""


class APIError(ApplianceError):
    """An error answer of the call API (server side and client side share it)."""

    status_code: int = 500
    code: int = -1

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        cid: str | None = None,
        details: list[Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        self.message = message
        self.field = field
        self.cid = cid
        self.details = details or []
        if status_code is not None:
            self.status_code = status_code
        super().__init__(message)

    def __str__(self) -> str:
        where = f" [{self.cid}]" if self.cid else ""
        return f"{self.message}{where}"


class InvalidRequest(APIError, ValueError):
    status_code = 400
    code = 4


class AuthenticationError(APIError):
    status_code = 401
    code = 5


class TokenExpired(AuthenticationError):
    """The token's ``exp`` has passed. Stream's code 40 makes its client SDKs fetch a new token
    from their ``tokenProvider`` and retry (REST) or reconnect (WebSocket)."""

    code = 40


class PermissionDenied(APIError, PermissionError):
    status_code = 403
    code = 17


class NotFound(APIError, LookupError):
    status_code = 404
    code = 16


class Conflict(APIError):
    status_code = 409
    code = 6


class PayloadTooLarge(APIError):
    status_code = 413
    code = 22


class Unsupported(APIError):
    """A request this server understands but does not serve (e.g. a Stream SDK's media join).
    The answer carries ``unrecoverable: true``: Stream's SDKs then stop retrying."""

    status_code = 501
    code = 4
    unrecoverable = True


class ServerUnavailable(APIError, ConnectionError):
    status_code = 503
    code = -1


API_ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}
