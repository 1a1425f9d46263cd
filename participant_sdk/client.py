"""A small async client for the coordinator's REST API (v1), across its replicas.

    async with CoordinatorClient(["http://10.0.0.1:7070", "http://10.0.0.2:7070"]) as coordinator:
        view = await coordinator.execute(
            [{"name": "queue-a", "payload": {"items": [1]}}], idempotency_key="order-17"
        )
        assert view.outcome == "committed"
        if view.pending:                          # phase 2 still going on at some branch
            await coordinator.wait(view.gtid, timeout=30)

Every method returns the answer as one of the models of :mod:`participant_sdk.models`
(typed as the coordinator's OpenAPI document describes it) and raises
:class:`CoordinatorError` for an error response.

Replicas: the client takes one base URL or several, the replicas of one coordinator over
a shared log (any of them accepts any request). A call goes first to the replica that
answered last. When it gets no answer there (connection refused or reset, timeout) or an
answer that says "try elsewhere" (503, and 502 or 504 from a proxy), it goes on to the
next replica, each at most once; any other answer (2xx, or a 4xx) is final. Only calls
that are safe to repeat go on by themselves: reads, enlist, commit and abort (the
coordinator answers those idempotently per transaction and participant name), and begin
and execute that carry an ``Idempotency-Key`` (a retry finds the same transaction).
Without a key, begin and execute go on only from a replica that could not be connected
to (the request never left); after a reset, a timeout or a 503 the transaction may have
begun, so that is raised as it is from a single coordinator, and the next call starts at
the next replica. When no replica answers, the last failure is raised as with one URL (a
:class:`CoordinatorError`, an ``aiohttp.ClientError`` or a ``TimeoutError``), with a note
(PEP 678) per replica saying what it answered; :func:`describe_failure` gives them in one line.

TLS: an ``https://`` replica's certificate is checked against ``ca_file`` (the system's CAs
without it), and the client presents ``cert_file``/``key_file`` to a coordinator that
requires a client certificate; or pass a ready ``ssl`` context. A replica whose
certificate does not verify is one that could not be connected to (the request never
left): the client goes on to the next, and raises ``aiohttp.ClientConnectorCertificateError``
(an ``aiohttp.ClientSSLError``) when none is left.
"""

from __future__ import annotations

import asyncio
import builtins
import ssl as _ssl
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson
from pydantic import BaseModel, ValidationError
from yarl import URL

from participant_sdk.models import AuditPage, Began, Cluster, Transaction, TransactionPage
from twopc_core.signing import signed_request_headers
from twopc_core.tls import client_context

__all__ = ["CoordinatorClient", "CoordinatorError", "describe_failure", "parse_coordinator_urls"]

JSON = dict[str, Any]
Answer = TypeVar("Answer", bound=BaseModel)

#: Answers that say "this replica cannot serve it now; another may" (a replica not ready,
#: a forward to a replica that died; a proxy's bad gateway or gateway timeout).
_TRY_ELSEWHERE = frozenset({502, 503, 504})
#: What a replica that gives no answer raises (refused, reset, timed out).
_NO_ANSWER: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)
#: Of those, the failures to connect at all: the request was never sent.
_NEVER_SENT: tuple[type[BaseException], ...] = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class CoordinatorError(Exception):
    """The coordinator answered with an error (``{"error": {code, message, details}}``)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def parse_coordinator_urls(urls: str | Iterable[str]) -> tuple[str, ...]:
    """The coordinator's base URLs from one URL, several, or comma-separated lists of them:
    blanks and trailing slashes dropped, each URL once, in the order given.

    Raises ``ValueError`` when there is none, or for one that is not
    ``http(s)://HOST[:PORT][/PATH]``.
    """
    found: list[str] = []
    for item in [urls] if isinstance(urls, str) else urls:
        if not isinstance(item, str):
            raise ValueError(f"a coordinator URL must be a string, not {type(item).__name__}")
        for part in item.split(","):
            text = part.strip()
            if not text:
                continue
            _check_url(text)
            url = text.rstrip("/")
            if url not in found:
                found.append(url)
    if not found:
        raise ValueError("no coordinator URL given")
    return tuple(found)


def describe_failure(error: BaseException) -> str:
    """One line saying why a call failed: what each replica answered, if the client
    tried several, else the error itself."""
    notes = getattr(error, "__notes__", None)
    if notes:
        return "; ".join(str(note) for note in notes)
    return _one_line(error)


class CoordinatorClient:
    """The coordinator's REST API at ``base_url``: one base URL, or a sequence of them
    (every replica's, or one string of comma-separated URLs); see the module's docstring
    for how a call fails over from one replica to the next.

    ``timeout`` bounds each attempt (seconds), so a call that tries every replica may
    take that long per replica. A ``session`` passed in stays the caller's to close.

    Credentials: ``token``, a bearer token the coordinator was configured with (what a
    client service or a person uses), or ``sign_as=(participant, secret)``: a
    participant signs each call with the secret it shares with the coordinator (what
    the SDK's inquiries and early-prepare enlistments use).

    ``ca_file``, ``cert_file``, ``key_file`` or ``ssl`` (not both kinds): the TLS of
    ``https://`` URLs, see the module's docstring. A file that is missing or does not
    load raises :class:`~twopc_core.tls.TlsConfigError` (a ``ValueError``) here.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        sign_as: tuple[str, str] | None = None,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        if token is not None and sign_as is not None:
            raise ValueError("a client calls with a token or signs as a participant, not both")
        #: Every replica's base URL, in the order given.
        self.urls = parse_coordinator_urls(base_url)
        files = (ca_file, cert_file, key_file)
        if ssl is not None and any(f is not None for f in files):
            raise ValueError("give either an ssl context or ca_file/cert_file/key_file, not both")
        if any(f is not None for f in files):
            ssl = client_context(ca_file, cert_file, key_file)
        # Per request, so that a session passed in gets it too; True: aiohttp's default checks.
        self._ssl: _ssl.SSLContext | bool = ssl or True
        # Where the next call starts: the replica that answered last.
        self._first = 0
        self._session = session
        # A session passed in belongs to the caller, who closes it.
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = dict(headers or {})
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._sign_as = sign_as

    @property
    def base_url(self) -> str:
        """The replica the next call goes to first (the one that answered last)."""
        return self.urls[self._first]

    async def __aenter__(self) -> CoordinatorClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session, unless it was passed in (then it is the caller's to close)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def begin(
        self,
        timeout_ms: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        participants: Sequence[Mapping[str, Any]] | None = None,
        idempotency_key: str | None = None,
    ) -> Began:
        """Start a transaction; returns its gtid, state and deadline, and ``replayed``:
        whether the ``idempotency_key`` had begun it before (its first answer was lost,
        or another client holds the same key). ``participants`` (``[{"name", "payload"}]``)
        enlists them at once; ``timeout_ms`` aborts it if not committed by then.

        Fails over to another replica only with an ``idempotency_key`` (or when a replica
        cannot be connected to): without one, a retry could begin a second transaction.
        """
        body = _without_none(timeout_ms=timeout_ms, metadata=metadata, participants=participants)
        view = await self._request(
            "POST",
            "/v1/transactions",
            body,
            idempotency_key=idempotency_key,
            repeatable=idempotency_key is not None,
            answer_header="Idempotent-Replayed",
        )
        view["replayed"] = view.pop("Idempotent-Replayed", None) == "true"
        return _answer_as(Began, view)

    async def enlist(self, gtid: str, name: str, payload: Any = None, prepared: bool = False) -> Transaction:
        """Enlist the participant ``name`` (its ``payload`` goes to it with prepare);
        ``prepared=True`` for a branch already voted YES. Returns the transaction."""
        body: JSON = {"name": name}
        if payload is not None:
            body["payload"] = payload
        if prepared:
            body["prepared"] = True
        view = await self._request("POST", f"/v1/transactions/{_segment(gtid)}/participants", body)
        return _answer_as(Transaction, view)

    async def commit(
        self, gtid: str, wait: Literal["all", "decision", "done"] = "all", timeout: float = 60.0
    ) -> Transaction:
        """Run both phases; returns the transaction.

        ``wait``: ``"all"`` (the coordinator's default) answers once phase 2 is over, or,
        past the coordinator's ``commit_wait_ms``, with the branches it still retries
        ``pending``; ``"decision"`` answers as soon as the decision is durable;
        ``"done"`` is ``"all"`` followed by :meth:`wait` for the pending branches, so it
        returns only when every branch has acknowledged phase 2 (``TimeoutError`` after
        ``timeout`` seconds of waiting).
        """
        if wait not in ("all", "decision", "done"):
            raise ValueError(f"wait must be 'all', 'decision' or 'done', not {wait!r}")
        params = {"wait": "decision"} if wait == "decision" else None
        view = await self._request("POST", f"/v1/transactions/{_segment(gtid)}/commit", {}, params=params)
        answer = _answer_as(Transaction, view)
        if wait == "done" and not answer.done:
            return await self.wait(gtid, timeout)
        return answer

    async def wait(self, gtid: str, timeout: float = 60.0, *, poll_interval: float = 0.1) -> Transaction:
        """Return the transaction once it is decided and every branch acknowledged phase
        2 (:attr:`Transaction.done`): what to do after a commit answered with branches
        ``pending``. Asks the coordinator every ``poll_interval`` seconds, growing to 1 s;
        raises ``TimeoutError`` (naming the branches still pending) after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        interval = poll_interval
        while True:
            view = await self.get(gtid)
            if view.done:
                return view
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = ", ".join(view.pending) or "the decision"
                raise TimeoutError(f"transaction {gtid} is {view.state} after {timeout} s; waiting for {waiting}")
            await asyncio.sleep(min(interval, left))
            interval = min(interval * 2, 1.0)

    async def abort(self, gtid: str) -> Transaction:
        """Abort the transaction (refused with 409 once it is committing); returns it."""
        return _answer_as(Transaction, await self._request("POST", f"/v1/transactions/{_segment(gtid)}/abort", {}))

    async def get(self, gtid: str) -> Transaction:
        """The transaction; raises :class:`CoordinatorError` with status 404 if unknown."""
        return _answer_as(Transaction, await self.get_json(gtid))

    async def get_json(self, gtid: str) -> JSON:
        """The transaction as the coordinator sent it, not validated: for a reader that
        must act on what it can read even if a field is not what this SDK knows (the
        in-doubt loop waits on an outcome it cannot read instead of failing)."""
        return await self._request("GET", f"/v1/transactions/{_segment(gtid)}")

    async def execute(
        self,
        participants: Sequence[Mapping[str, Any]],
        timeout_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> Transaction:
        """Begin, enlist ``[{"name", "payload"}, ...]`` and commit in one call (as
        :meth:`commit` with ``wait="all"``); returns the transaction.

        Fails over to another replica only with an ``idempotency_key`` (or when a replica
        cannot be connected to), as :meth:`begin` does.
        """
        body = _without_none(participants=builtins.list(participants), timeout_ms=timeout_ms)
        view = await self._request(
            "POST",
            "/v1/transactions:execute",
            body,
            idempotency_key=idempotency_key,
            repeatable=idempotency_key is not None,
        )
        return _answer_as(Transaction, view)

    async def cluster(self) -> Cluster:
        """The coordinator replicas as the one that answers sees them: their epochs,
        leases, and who took over whom."""
        return _answer_as(Cluster, await self._request("GET", "/v1/cluster"))

    async def list(
        self,
        state: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        heuristic: bool | None = None,
    ) -> TransactionPage:
        """One page of transactions, oldest first (a reader's call): in ``state`` if
        given, at most ``limit``, from ``cursor`` (the last page's ``next_cursor``); with
        ``heuristic=True`` only transactions with a branch forced against the decision."""
        fields = _without_none(state=state, limit=limit, cursor=cursor)
        if heuristic is not None:
            fields["heuristic"] = "true" if heuristic else "false"
        params = {k: str(v) for k, v in fields.items()}
        return _answer_as(TransactionPage, await self._request("GET", "/v1/transactions", params=params or None))

    async def abandon(self, gtid: str, participant: str, reason: str) -> Transaction:
        """Operator only: stop phase 2 to ``participant``, gone for good (the decision
        stands); recorded in the audit with ``reason``. Returns the transaction's view."""
        body = {"action": "abandon", "participant": participant, "reason": reason}
        view = await self._request("POST", f"/v1/transactions/{_segment(gtid)}/resolve", body)
        return _answer_as(Transaction, view)

    async def audit(self, limit: int | None = None, cursor: str | None = None) -> AuditPage:
        """Operators' acts, newest first (an operator's call), a page at a time."""
        params = {k: str(v) for k, v in _without_none(limit=limit, cursor=cursor).items()}
        return _answer_as(AuditPage, await self._request("GET", "/v1/audit", params=params or None))

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        repeatable: bool = True,
        answer_header: str | None = None,
    ) -> JSON:
        """Send to the replicas in turn, from the one that answered last, until one answers.

        ``repeatable``: whether the call may be sent again after a replica may have
        received it (see the module's docstring). ``answer_header``: a response header
        to return in the body under its own name (absent if the answer had none).
        """
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = orjson.dumps(body)
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        # The query goes in the URL as signed: the coordinator checks the same bytes.
        path_qs = path + ("?" + urlencode(params) if params else "")
        count = len(self.urls)
        first = self._first
        failures: builtins.list[tuple[str, BaseException]] = []
        for step in range(count):
            index = (first + step) % count
            url = self.urls[index]
            failure: BaseException
            if self._sign_as is not None:  # signed afresh for each replica: a nonce is used once
                headers.update(signed_request_headers(*self._sign_as, method, path_qs, data or b""))
            try:
                async with self._session.request(
                    method,
                    URL(url + path_qs, encoded=True),
                    data=data,
                    headers=headers,
                    timeout=self._timeout,
                    ssl=self._ssl,
                ) as response:
                    raw = await response.read()
                    status = response.status
                    header = response.headers.get(answer_header) if answer_header else None
            except _NO_ANSWER as exc:
                failure = exc
                may_go_on = repeatable or isinstance(exc, _NEVER_SENT)
            else:
                if status not in _TRY_ELSEWHERE:
                    self._first = index
                    answer = _decoded(status, raw)
                    if answer_header and header is not None:
                        answer[answer_header] = header
                    return answer
                failure = _error_from(status, raw)
                may_go_on = repeatable
            failures.append((url, failure))
            if not may_go_on:
                # The caller decides whether to try again; not at a replica that just failed.
                self._first = (index + 1) % count
                break
        raise self._noted(failures)

    def _noted(self, failures: builtins.list[tuple[str, BaseException]]) -> BaseException:
        """The last failure, with a note per replica tried when there are several."""
        error = failures[-1][1]
        if len(self.urls) > 1:
            for url, failure in failures:
                error.add_note(f"coordinator {url}: {_one_line(failure)}")
            if len(failures) < len(self.urls):
                error.add_note("not sent to the other replicas: without an Idempotency-Key it may have begun")
        return error


def _answer_as(model: type[Answer], body: JSON) -> Answer:
    """A 2xx body as the model of its answer; one that is not is the coordinator's error."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])
        raise CoordinatorError(200, "invalid_response", f"not a {model.__name__}: {problems}", body) from None


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"a coordinator URL is http(s)://HOST[:PORT][/PATH], not {url!r}")


def _one_line(error: BaseException) -> str:
    if isinstance(error, CoordinatorError):
        return str(error)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _decoded(status: int, raw: bytes) -> JSON:
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
