"""Bearer tokens for the coordinator's REST API: how one is made, and what of it a
configuration keeps (its SHA-256, never the token)."""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["TOKEN_PREFIX", "new_token", "token_hash"]

#: Every token starts so: a leaked one is easy to recognise (and to scan for).
TOKEN_PREFIX = "twopc_"


def new_token() -> str:
    """A new bearer token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the configuration keeps of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()
