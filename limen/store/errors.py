"""Errors the store raises; the API maps them to HTTP statuses, the CLI to messages."""

from __future__ import annotations


class StoreError(Exception):
    """The store cannot be used (missing key, wrong key, migration failure...)."""


class NotFound(LookupError):
    """No such object. ``kind`` and ``key`` name what was looked for."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"no {kind} {key!r}")
        self.kind = kind
        self.key = key


class Conflict(ValueError):
    """The change would break a uniqueness rule or a reference (HTTP 409)."""


class Invalid(ValueError):
    """A value is not acceptable; ``field`` names it (HTTP 422)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PreconditionFailed(Conflict):
    """The object changed since the client read it: ``If-Match`` no longer matches its
    entity tag (HTTP 412, RFC 9110 §13.1.1)."""
