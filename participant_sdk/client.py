"""A small async client for the coordinator's REST API (v1).

    async with CoordinatorClient("http://127.0.0.1:7070") as coordinator:
        view = await coordinator.execute([{"name": "queue-a", "payload": {"items": [1]}}])
        assert view["outcome"] == "committed"

Every method returns the decoded JSON body and raises :class:`CoordinatorError` for an
error response.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import orjson

__all__ = ["CoordinatorClient", "CoordinatorError"]

JSON = dict[str, Any]


class CoordinatorError(Exception):
    """The coordinator answered with an error (``{"error": {code, message, details}}``)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class CoordinatorClient:
    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        # A session passed in belongs to the caller, who closes it.
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = dict(headers or {})

    async def __aenter__(self) -> CoordinatorClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def begin(
        self,
        timeout_ms: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        participants: Sequence[Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Start a transaction; returns ``{gtid, state, deadline}``."""
        body = _without_none(timeout_ms=timeout_ms, metadata=metadata, participants=participants)
        return await self._request("POST", "/v1/transactions", body, idempotency_key=idempotency_key)

    async def enlist(self, gtid: str, name: str, payload: Any = None, prepared: bool = False) -> JSON:
        """Enlist the participant ``name``; ``prepared=True`` for a branch already voted YES."""
        body: JSON = {"name": name}
        if payload is not None:
            body["payload"] = payload
        if prepared:
            body["prepared"] = True
        return await self._request("POST", f"/v1/transactions/{_segment(gtid)}/participants", body)

    async def commit(self, gtid: str, wait: Literal["all", "decision"] = "all") -> JSON:
        """Run the protocol; ``wait="decision"`` returns once the decision is durable."""
        if wait not in ("all", "decision"):
            raise ValueError(f"wait must be 'all' or 'decision', not {wait!r}")
        params = {"wait": "decision"} if wait == "decision" else None
        return await self._request("POST", f"/v1/transactions/{_segment(gtid)}/commit", {}, params=params)

    async def abort(self, gtid: str) -> JSON:
        return await self._request("POST", f"/v1/transactions/{_segment(gtid)}/abort", {})

    async def get(self, gtid: str) -> JSON:
        """The transaction's view; raises :class:`CoordinatorError` with status 404 if unknown."""
        return await self._request("GET", f"/v1/transactions/{_segment(gtid)}")

    async def execute(
        self,
        participants: Sequence[Mapping[str, Any]],
        timeout_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        """Begin, enlist ``[{"name", "payload"}, ...]`` and commit in one call."""
        body = _without_none(participants=builtins.list(participants), timeout_ms=timeout_ms)
        return await self._request("POST", "/v1/transactions:execute", body, idempotency_key=idempotency_key)

    async def list(self, state: str | None = None, limit: int | None = None, cursor: str | None = None) -> JSON:
        """One page: ``{"transactions": [...], "next_cursor": str | None}``."""
        params = {k: str(v) for k, v in _without_none(state=state, limit=limit, cursor=cursor).items()}
        return await self._request("GET", "/v1/transactions", params=params or None)

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> JSON:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        async with self._session.request(
            method, self.base_url + path, data=data, params=params, headers=headers, timeout=self._timeout
        ) as response:
            raw = await response.read()
            status = response.status
        if status >= 400:
            raise _error_from(status, raw)
        try:
            return orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            excerpt = raw[:200].decode(errors="replace")
            raise CoordinatorError(status, "invalid_response", "response body is not JSON", excerpt) from None


def _segment(value: str) -> str:
    return quote(value, safe="")


def _without_none(**fields: Any) -> JSON:
    return {k: v for k, v in fields.items() if v is not None}


def _error_from(status: int, raw: bytes) -> CoordinatorError:
    try:
        error = orjson.loads(raw)["error"]
        code, message = str(error["code"]), str(error.get("message", ""))
        return CoordinatorError(status, code, message, error.get("details"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        # Not the coordinator's error shape (a proxy, a crash page): keep a short excerpt.
        return CoordinatorError(status, f"http_{status}", raw[:200].decode(errors="replace"))
