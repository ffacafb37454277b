"""The errors a client can get back, each with the HTTP status it maps to."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered to the client as `{"error": {"type", "message", "request_id"}}`."""

    def __init__(
        self,
        status: int,
        type_: str,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.retry_after = retry_after
        self.param = param  # the request parameter at fault (OpenAI's error shape names it)


def bad_request(message: str, *, param: str | None = None) -> ApiError:
    return ApiError(400, "invalid_request", message, param=param)


def unsupported_parameter(param: str, message: str) -> ApiError:
    return ApiError(400, "unsupported_parameter", message, param=param)


def retryable(status: int) -> bool:
    """Whether the same request may succeed if sent again (to this replica or another)."""
    return status in (408, 429) or status >= 500
