"""Who is calling: bearer tokens for clients, signatures for participants.

A client presents ``Authorization: Bearer <token>``; the configuration keeps only each
token's SHA-256 with its name and roles, and a presented token is compared with every
configured hash in constant time. A participant signs its own calls (inquiries,
early-prepare enlistments) with its shared secret (:mod:`twopc_core.signing`) and is
known by its registered name. What each may then do is the API's table
(:mod:`coordinator.api._auth`); this module only says who it is.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from coordinator.config import ROLES, AuthSettings
from twopc_core.signing import (
    NONCE_HEADER,
    PARTICIPANT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    ReplayGuard,
    SignatureError,
    participant_operation,
    verify,
)

__all__ = ["ANONYMOUS", "Authenticator", "Principal", "Unauthenticated"]


class Unauthenticated(Exception):
    """No credentials, or credentials that prove nobody (a 401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Principal:
    """Who a request comes from."""

    name: str
    roles: frozenset[str]
    #: A participant that signed its call: it may ask only about its own branches.
    participant: bool = False
    #: Authentication is off: anybody may do anything, and no transaction has an owner.
    anonymous: bool = False

    def has(self, role: str) -> bool:
        return self.anonymous or role in self.roles

    @property
    def owner(self) -> str | None:
        """What a transaction this principal begins records as its owner."""
        return None if self.anonymous else self.name


#: Everyone, when authentication is off.
ANONYMOUS = Principal("anonymous", frozenset(ROLES), anonymous=True)

#: What a role implies: an operator reads everything too.
_IMPLIED = {"client": {"client"}, "reader": {"reader"}, "operator": {"operator", "reader"}}


@dataclass(frozen=True)
class _Token:
    digest: bytes
    principal: Principal


class Authenticator:
    """Says who a request is from, by its headers (and a participant's body)."""

    def __init__(self, settings: AuthSettings, participant_secrets: Mapping[str, str]) -> None:
        self.enabled = settings.enabled
        self._tokens = [
            _Token(
                bytes.fromhex(t.sha256),
                Principal(t.name, frozenset(role for r in t.roles for role in _IMPLIED[r])),
            )
            for t in settings.tokens
        ]
        self._secrets = dict(participant_secrets)
        self._replays = ReplayGuard()

    def authenticate(self, headers: Mapping[str, str], method: str, path_qs: str, body: bytes) -> Principal:
        """The caller, or :class:`Unauthenticated`."""
        if not self.enabled:
            return ANONYMOUS
        participant = headers.get(PARTICIPANT_HEADER)
        if participant is not None:
            return self._participant(participant, headers, method, path_qs, body)
        authorization = headers.get("Authorization")
        if authorization is None:
            raise Unauthenticated("unauthorized", "this call needs a bearer token (Authorization: Bearer ...)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("invalid_token", "the Authorization header must be 'Bearer <token>'")
        return self._bearer(token.strip())

    def _bearer(self, token: str) -> Principal:
        digest = hashlib.sha256(token.encode()).digest()
        found: Principal | None = None
        # Every hash is compared, matched or not: the time taken says nothing of which.
        for known in self._tokens:
            if hmac.compare_digest(digest, known.digest):
                found = known.principal
        if found is None:
            raise Unauthenticated("invalid_token", "the bearer token is not one this coordinator accepts")
        return found

    def _participant(self, name: str, headers: Mapping[str, str], method: str, path_qs: str, body: bytes) -> Principal:
        secret = self._secrets.get(name)
        nonce = headers.get(NONCE_HEADER, "")
        if secret is None:
            raise Unauthenticated("invalid_signature", f"no participant named {name!r} is registered")
        if not 8 <= len(nonce) <= 64 or not nonce.isascii():
            raise Unauthenticated("invalid_signature", "the signed call has no usable nonce")
        try:
            verify(
                secret,
                participant_operation(name, nonce, method, path_qs),
                body,
                headers.get(TIMESTAMP_HEADER),
                headers.get(SIGNATURE_HEADER),
            )
            self._replays.check(nonce)
        except SignatureError as exc:
            raise Unauthenticated("invalid_signature", f"participant {name!r}: {exc}") from None
        return Principal(name, frozenset(), participant=True)
