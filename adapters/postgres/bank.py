"""The bank: accounts in PostgreSQL, as a 2PC participant (``twopc bank serve``).

A transfer between two banks on two databases is one global transaction with two
branches, a debit at one bank and a credit at the other, each ``{"account", "delta"}``:

- work at prepare: the coordinator's prepare carries the entry; the bank applies it
  inside the branch and votes no (with the reason) for an unknown account, for a balance
  that would go negative, or for a transfer it already applied;
- early prepare: ``POST /early-prepare {"gtid", "account", "delta"}`` applies the entry
  now inside ``participant.branch(gtid)``, which prepares it and enlists this bank in
  the transaction as voted yes.

Balances never go negative (a CHECK constraint) and each gtid is applied at most once
per bank (the primary key of ``applied_transfers``). HTTP: ``GET /accounts``,
``GET /accounts/{id}``, ``POST /accounts {"id", "balance"}`` (open an account),
``GET /transfers``, ``GET /healthz`` (with the number and age of prepared transactions),
the ledger (``POST /ledger``, ``GET /ledger``: one row per event a stream job books, see
:mod:`adapters.postgres.ledger`), the participant protocol at ``/twopc``. A body over
``max_body_bytes`` is answered 413 (JSON). :func:`run` serves HTTPS with an SSL context,
and reaches an https coordinator with ``coordinator_ssl``.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import structlog
from aiohttp import web
from psycopg import errors as pg_errors
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.postgres import PostgresResource, PostgresSetupError
from adapters.postgres.ledger import LEDGER_SCHEMA, ledger_routes
from participant_sdk import (
    MAX_BODY_BYTES,
    PARTICIPANT_ERRORS,
    CoordinatorClient,
    Participant,
    PrepareResult,
    Transaction,
    Vote,
)
from twopc_core.http import DomainErrors, HttpError, error_middleware, invalid_body, json_response
from twopc_core.metrics import ScrapeCollector
from twopc_core.protocol import GTID_PATTERN
from twopc_core.runtime import run_service
from twopc_core.serving import ServerLimits

__all__ = [
    "APPLY_FUNCTION",
    "SCHEMA",
    "EarlyEntry",
    "Entry",
    "NewAccount",
    "VotedNo",
    "apply_entry",
    "bank_handler",
    "bank_statement",
    "build_app",
    "create_schema",
    "run",
    "transfer",
]

logger = structlog.get_logger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id      text PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);
CREATE TABLE IF NOT EXISTS applied_transfers (
    gtid       text PRIMARY KEY,
    account    text NOT NULL,
    delta      bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""
#: One side of a transfer, in the database: applied once per gtid, never below zero or
#: past a bigint, each refusal raised with the reason the bank votes no with. One call is
#: the whole branch's work, so a prepare is one round trip (see ``PrepareStatement``).
APPLY_FUNCTION = """
CREATE OR REPLACE FUNCTION twopc_bank_apply(p_gtid text, p_account text, p_delta bigint)
RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    new_balance bigint;
    old_balance bigint;
BEGIN
    INSERT INTO applied_transfers (gtid, account, delta) VALUES (p_gtid, p_account, p_delta)
        ON CONFLICT (gtid) DO NOTHING;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'transfer % was already applied here', p_gtid;
    END IF;
    UPDATE accounts SET balance = balance + p_delta
        WHERE id = p_account AND balance::numeric + p_delta BETWEEN 0 AND 9223372036854775807
        RETURNING balance INTO new_balance;
    IF FOUND THEN
        RETURN new_balance;
    END IF;
    SELECT balance INTO old_balance FROM accounts WHERE id = p_account;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no account %', quote_literal(p_account);
    ELSIF old_balance::numeric + p_delta < 0 THEN
        RAISE EXCEPTION 'insufficient funds in account %', quote_literal(p_account);
    END IF;
    RAISE EXCEPTION 'the balance of account % would overflow', quote_literal(p_account);
END
$fn$
"""
_APPLY = "SELECT twopc_bank_apply(%s, %s, %s)"
_ACCOUNT = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_BIGINT = 2**63 - 1
#: Any constant: serialises banks creating their tables in one database at once.
_SCHEMA_LOCK = 0x62616E6B

PARTICIPANT = web.AppKey("bank.participant", Participant)
RESOURCE = web.AppKey("bank.resource", PostgresResource)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entry(_Body):
    """One bank's side of a transfer: ``delta`` is added to the account's balance."""

    account: str = Field(pattern=_ACCOUNT)
    delta: int = Field(ge=-_BIGINT, le=_BIGINT)


class EarlyEntry(Entry):
    gtid: str = Field(pattern=GTID_PATTERN)


class NewAccount(_Body):
    id: str = Field(pattern=_ACCOUNT)
    balance: int = Field(0, ge=0, le=_BIGINT)


# -- the branch's work -------------------------------------------------------------------


async def apply_entry(conn: psycopg.AsyncConnection, gtid: str, entry: Entry) -> PrepareResult:
    """Apply ``entry`` for transfer ``gtid`` on ``conn`` (inside the branch); YES, or NO
    with the reason (the caller then rolls the branch back)."""
    try:
        await conn.execute(_APPLY, [gtid, entry.account, entry.delta])
    except pg_errors.RaiseException as exc:
        return PrepareResult.no(exc.diag.message_primary or str(exc))
    return PrepareResult.yes()


def bank_statement(gtid: str, branch: str, payload: Any) -> tuple[str, Sequence[Any]] | PrepareResult:
    """Work at prepare, as one statement: the payload is an :class:`Entry`."""
    entry = _entry(payload)
    if isinstance(entry, PrepareResult):
        return entry
    return _APPLY, (gtid, entry.account, entry.delta)


async def bank_handler(conn: psycopg.AsyncConnection, gtid: str, branch: str, payload: Any) -> PrepareResult:
    """Work at prepare, statement by statement (the bank itself prepares with
    :func:`bank_statement`, in one round trip): the payload is an :class:`Entry`."""
    entry = _entry(payload)
    if isinstance(entry, PrepareResult):
        return entry
    return await apply_entry(conn, gtid, entry)


def _entry(payload: Any) -> Entry | PrepareResult:
    """The payload as an entry, or the NO vote naming what is wrong with it."""
    try:
        return Entry.model_validate(payload)
    except ValidationError as exc:
        return PrepareResult.no(f'payload must be {{"account": str, "delta": int}}: {_describe(exc)}')


async def create_schema(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", [_SCHEMA_LOCK])
        await conn.execute(SCHEMA)
        await conn.execute(APPLY_FUNCTION)
        await conn.execute(LEDGER_SCHEMA)


# -- a client's side: one transfer as one global transaction -------------------------------


async def transfer(
    coordinator: CoordinatorClient,
    source: tuple[str, str],
    target: tuple[str, str],
    amount: int,
    *,
    idempotency_key: str | None = None,
    timeout_ms: int | None = None,
) -> Transaction:
    """Move ``amount`` from ``(bank, account)`` to ``(bank, account)`` in one global
    transaction (work at prepare at both banks); returns the coordinator's answer."""
    if amount <= 0:
        raise ValueError("amount must be positive")
    participants = [
        {"name": source[0], "payload": {"account": source[1], "delta": -amount}},
        {"name": target[0], "payload": {"account": target[1], "delta": amount}},
    ]
    return await coordinator.execute(participants, timeout_ms=timeout_ms, idempotency_key=idempotency_key)


# -- the service ---------------------------------------------------------------------------


def build_app(
    name: str,
    dsn: str,
    coordinator_url: str | Sequence[str],
    secret: str,
    data_dir: str | Path,
    *,
    inquiry_interval: float = 5.0,
    sweep_interval: float = 60.0,
    pool_size: int = 10,
    max_body_bytes: int = MAX_BODY_BYTES,
    coordinator_ssl: ssl.SSLContext | None = None,
    metrics: bool = True,
) -> web.Application:
    """The bank as an aiohttp application; the participant starts and stops with it.

    ``coordinator_url``: the coordinator's base URL, or every replica's;
    ``coordinator_ssl``: the TLS of an https one.
    """
    resource = PostgresResource(dsn, name, statement=bank_statement, pool_size=pool_size)
    participant = Participant(
        name=name,
        resource=resource,
        secret=secret,
        coordinator_url=coordinator_url,
        log_path=Path(data_dir) / "participant.db",
        inquiry_interval=inquiry_interval,
        sweep_interval=sweep_interval,
        coordinator_ssl=coordinator_ssl,
        metrics=metrics,
    )
    app = web.Application(middlewares=[error_middleware(_ERRORS, service="the bank")], client_max_size=max_body_bytes)
    app[PARTICIPANT], app[RESOURCE] = participant, resource

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        await create_schema(dsn)  # before the participant serves a prepare
        await participant.start()
        yield
        await participant.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", participant.metrics_handler())
    participant.metrics_registry.register(ScrapeCollector(resource.metric_families))
    app.router.add_get("/accounts", _accounts)
    app.router.add_post("/accounts", _open_account)
    app.router.add_get("/accounts/{id}", _account)
    app.router.add_get("/transfers", _transfers)
    app.router.add_post("/early-prepare", _early_prepare)
    app.router.add_routes(ledger_routes(PARTICIPANT, resource.connection))
    app.add_subapp("/twopc", participant.app(manage_lifecycle=False, max_body_bytes=max_body_bytes))
    return app


class VotedNo(Exception):
    """An early prepare whose entry the bank refused (the branch was rolled back)."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


#: The bank's errors, and the participant's (an early prepare), by status and code.
_ERRORS: DomainErrors = {
    **PARTICIPANT_ERRORS,
    VotedNo: (409, "vote_no"),
    psycopg.OperationalError: (503, "database_unavailable"),
}

_Model = TypeVar("_Model", bound=_Body)


async def _read(request: web.Request, model: type[_Model]) -> _Model:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise invalid_body(exc, what="the body") from None


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False)[:5]
    )


async def _healthz(request: web.Request) -> web.Response:
    participant = request.app[PARTICIPANT]
    try:
        stats = await request.app[RESOURCE].prepared_stats()
    except (psycopg.Error, OSError) as exc:
        return json_response({"status": "unavailable", "name": participant.name, "error": str(exc)}, 503)
    return json_response(
        {
            "status": "ok",
            "name": participant.name,
            "in_doubt": participant.in_doubt_count,
            "prepared": stats.as_dict(),
        }
    )


async def _accounts(request: web.Request) -> web.Response:
    async with request.app[RESOURCE].connection() as conn:
        cursor = await conn.execute("SELECT id, balance FROM accounts ORDER BY id")
        accounts = [{"id": id_, "balance": balance} for id_, balance in await cursor.fetchall()]
    return json_response({"accounts": accounts, "total": sum(a["balance"] for a in accounts)})


async def _account(request: web.Request) -> web.Response:
    account = request.match_info["id"]
    async with request.app[RESOURCE].connection() as conn:
        cursor = await conn.execute("SELECT balance FROM accounts WHERE id = %s", [account])
        row = await cursor.fetchone()
    if row is None:
        raise HttpError(404, "not_found", f"no account {account!r}")
    return json_response({"id": account, "balance": row[0]})


async def _open_account(request: web.Request) -> web.Response:
    new = await _read(request, NewAccount)
    async with request.app[RESOURCE].connection() as conn:
        cursor = await conn.execute(
            "INSERT INTO accounts (id, balance) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
            [new.id, new.balance],
        )
        if await cursor.fetchone() is None:
            raise HttpError(409, "account_exists", f"account {new.id!r} already exists")
    return json_response({"id": new.id, "balance": new.balance}, 201)


async def _transfers(request: web.Request) -> web.Response:
    """Applied (committed) entries, oldest first."""
    async with request.app[RESOURCE].connection() as conn:
        cursor = await conn.execute("SELECT gtid, account, delta FROM applied_transfers ORDER BY applied_at, gtid")
        rows = await cursor.fetchall()
    return json_response({"transfers": [{"gtid": g, "account": a, "delta": d} for g, a, d in rows]})


async def _early_prepare(request: web.Request) -> web.Response:
    """Apply an entry now, in this bank's branch of ``gtid``, and enlist it prepared.

    A refused entry, or what the participant refuses (the branch exists, the
    coordinator refused or could not be reached), is answered by the error middleware.
    """
    entry = await _read(request, EarlyEntry)
    participant = request.app[PARTICIPANT]
    async with participant.branch(entry.gtid) as conn:
        result = await apply_entry(conn, entry.gtid, entry)
        if result.vote is not Vote.YES:
            # Leaving the branch with an exception rolls it back.
            raise VotedNo(result.reason or "voted no", {"gtid": entry.gtid, "account": entry.account})
    return json_response({"gtid": entry.gtid, "branch": participant.name, "vote": "yes"}, 201)


def run(
    name: str,
    host: str,
    port: int,
    dsn: str,
    coordinator_url: str | Sequence[str],
    secret: str,
    data_dir: str | Path,
    *,
    inquiry_interval: float = 5.0,
    sweep_interval: float = 60.0,
    ssl_context: ssl.SSLContext | None = None,
    coordinator_ssl: ssl.SSLContext | None = None,
    limits: ServerLimits | None = None,
    metrics: bool = True,
) -> None:
    """Serve the bank until SIGINT or SIGTERM, over HTTPS with ``ssl_context``; exit 2
    with the reason if PostgreSQL cannot serve.

    ``coordinator_url``: the coordinator's base URL, or every replica's.
    """
    app = build_app(
        name,
        dsn,
        coordinator_url,
        secret,
        data_dir,
        inquiry_interval=inquiry_interval,
        sweep_interval=sweep_interval,
        coordinator_ssl=coordinator_ssl,
        metrics=metrics,
    )
    scheme = "https" if ssl_context else "http"

    def listening(*_args: object, **_kwargs: object) -> None:
        logger.info("listening", participant=name, url=f"{scheme}://{host}:{port}")

    try:
        run_service(app, host, port, print=listening, ssl_context=ssl_context, limits=limits)
    except PostgresSetupError as exc:
        print(f"bank {name}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
