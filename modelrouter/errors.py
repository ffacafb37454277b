"""The errors a client can get back, each with the HTTP status it maps to."""

from __future__ import annotations

# Where the same request, sent again, may well succeed: the default of `retryable` (an error
# that knows better says so itself, e.g. "every provider was tried and failed" is a 502 that
# a retry would only repeat).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 502, 503, 504})


def retryable(status: int) -> bool:
    """Whether the same request may succeed if sent again (to this replica or another)."""
    return status in RETRYABLE_STATUSES


class ApiError(Exception):
    """An error answered to the client (in the route family's error format)."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
        retryable: bool | None = None,
        allow: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.retry_after = retry_after
        self.param = param  # the request parameter at fault (OpenAI's error shape names it)
        # Whether sending the same request again may succeed; None: the status decides.
        self.retryable = status in RETRYABLE_STATUSES if retryable is None else retryable
        self.allow = allow  # a 405's allowed methods


def bad_request(message: str, *, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request", message, param=param)


def unsupported_parameter(param: str, message: str) -> ApiError:
    return ApiError(400, "unsupported_parameter", message, param=param)
