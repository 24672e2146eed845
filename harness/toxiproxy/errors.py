"""The one error type every layer can raise: a message with the HTTP status Go gives it.

Toxiproxy's Go code pairs each error with its status (``ErrProxyNotFound`` is a 404), so
the proxy collection and the toxic schema raise these and the API layer only renders them.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_body(reason: object) -> ApiError:
    """Go's ``bad request body: ...`` 400, for a body that cannot be decoded or is invalid."""
    return ApiError(400, f"bad request body: {reason}")
