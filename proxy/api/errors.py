"""API errors: one class carrying the HTTP status, the Cloudflare-style code and the message.

Codes (also in docs/api.md): 1000 internal error, 1001 request body is not valid JSON,
1002 invalid field, 1003 invalid certificate or key, 1004 refused in the current state,
1005 limit reached (400), 1006 rate limited (429), 1007 object not found, 1008 body too large,
1009 conflict (409),
1010 store unavailable (503),
7000 no route, 7001 method not allowed, 7003 unknown account, 9109 forbidden,
10000 authentication error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

logger = logging.getLogger(__name__)

INTERNAL = 1000
INVALID_JSON = 1001
INVALID_FIELD = 1002
INVALID_CERTIFICATE = 1003
REFUSED = 1004
LIMIT_REACHED = 1005
RATE_LIMITED = 1006
NOT_FOUND = 1007
TOO_LARGE = 1008
CONFLICT = 1009
STORE_UNAVAILABLE = 1010
NO_ROUTE = 7000
METHOD_NOT_ALLOWED = 7001
UNKNOWN_ACCOUNT = 7003
FORBIDDEN = 9109
AUTHENTICATION = 10000


class ApiError(Exception):
    """Raised by views and middleware; rendered once, as the error envelope, by the middleware."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str, *, code: int = INVALID_FIELD) -> ApiError:
    return ApiError(400, code, message)


def invalid_field(field: str, message: str) -> ApiError:
    return ApiError(400, INVALID_FIELD, f"{field}: {message}")


def not_found(message: str) -> ApiError:
    return ApiError(404, NOT_FOUND, message)
