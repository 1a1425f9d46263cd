"""Errors a participant answers with: an HTTP status and a JSON ``{"error": ...}`` body."""

from __future__ import annotations

from typing import Any

__all__ = ["ParticipantError"]


class ParticipantError(Exception):
    """A protocol call that cannot be answered as asked (wrong state, resource failure)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)

    def __repr__(self) -> str:
        return f"ParticipantError({self.status}, {self.code!r}, {self.message!r})"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}
