"""Client errors: each becomes its own 4xx response with a JSON body, never a failed batch."""
from __future__ import annotations

from handlers import contract


class InputError(Exception):
    """A client mistake. `code` is a stable machine-readable name, `message` says what to do."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict:
        return contract.error(self.code, self.message)
