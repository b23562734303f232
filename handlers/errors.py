"""Client errors: each becomes its own 4xx response with a JSON body, never a failed batch."""
from __future__ import annotations


class InputError(Exception):
    """A client mistake. `code` is a stable machine-readable name, `message` says what to do."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict:
        return {"error": self.code, "message": self.message}


REASON_PHRASES = {
    400: "Bad Request",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}
