"""The postgres workload: transfers between two banks, each a bank service on a database
of its own; the baseline runs the same work on the two databases directly, in the same
queries the banks send, with PostgreSQL's own two-phase commit and no coordinator."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import aiohttp
import psycopg
from psycopg.pq import Escaping
from psycopg_pool import AsyncConnectionPool

from adapters.postgres.bank import Entry, bank_statement
from compose.localcluster import LocalCluster, Service
from participant_sdk import PrepareResult
from tools.bench._cluster import Branch, ClusterWorkload
from tools.bench._coordinators import Coordinators
from tools.bench._resources import postgres_server, run_database
from tools.bench._workload import Progress

__all__ = ["Banks", "PostgresWorkload", "Transfer"]

Transfer = tuple[Entry, Entry]
"""A debit at bank-a and a credit at bank-b."""

#: Enough that two concurrent transfers rarely lock the same row.
ACCOUNTS = 1000
#: Enough that no transfer is refused for lack of funds.
OPENING_BALANCE = 10**12
_OPENING_CLIENTS = 16
#: As the bank's own branches: a lock wait across the two databases (which neither
#: server can see as a deadlock) ends in an error instead of hanging.
_LOCK_TIMEOUT = "5s"


class Banks:
    """bank-a and bank-b, each on a new database of the server, with their accounts."""

    names = ("bank-a", "bank-b")

    def __init__(self, server_dsn: str | None, run_id: str) -> None:
        self._server_dsn = server_dsn
        self._run_id = run_id
        self._random = random.Random()
        #: Each bank's database, once provisioned.
        self.dsns: dict[str, str] = {}

    async def provision(self, cleanup: AsyncExitStack, progress: Progress) -> list[Service]:
        server = postgres_server(self._server_dsn)
        progress(f"creating a database for each of {', '.join(self.names)} ...")
        for bank in self.names:
            database = f"twopc_bench_{self._run_id}_{bank.replace('-', '_')}"
            self.dsns[bank] = await cleanup.enter_async_context(run_database(server, database))
        return [Service(bank, "bank", ("--dsn", self.dsns[bank])) for bank in self.names]

    async def open_accounts(self, cluster: LocalCluster, progress: Progress) -> None:
        progress(f"opening {ACCOUNTS} accounts at each of {', '.join(self.names)} ...")
        requests = iter([(bank, n) for bank in self.names for n in range(ACCOUNTS)])

        async def opener(http: aiohttp.ClientSession) -> None:
            for bank, n in requests:
                body = {"id": f"acct-{n}", "balance": OPENING_BALANCE}
                async with http.post(f"{cluster.url(bank)}/accounts", json=body) as response:
                    if response.status != 201:
                        raise RuntimeError(f"{bank}: opening account acct-{n} failed: {await response.text()}")

        async with aiohttp.ClientSession() as http:
            await asyncio.gather(*(opener(http) for _ in range(_OPENING_CLIENTS)))

    def transfer(self) -> Transfer:
        amount = self._random.randint(1, 100)
        debit = Entry(account=f"acct-{self._random.randrange(ACCOUNTS)}", delta=-amount)
        credit = Entry(account=f"acct-{self._random.randrange(ACCOUNTS)}", delta=amount)
        return debit, credit

    def branches(self, transfer: Transfer) -> list[Branch]:
        return [(bank, entry.model_dump()) for bank, entry in zip(self.names, transfer, strict=True)]


class PostgresWorkload(ClusterWorkload):
    name = "postgres"
    baseline_description = (
        "the same transfer straight on the two databases: on each, BEGIN, the bank's work "
        "(twopc_bank_apply: its insert into applied_transfers and its UPDATE of the balance) and PREPARE "
        "TRANSACTION in one query, as the bank sends them; then COMMIT PREPARED on both (psycopg, a pool "
        "per database with a connection per client)"
    )

    def __init__(
        self,
        directory: Path,
        coordinator_toml: str = "",
        server_dsn: str | None = None,
        coordinators: Coordinators | None = None,
    ) -> None:
        super().__init__(directory, coordinator_toml, coordinators)
        self.banks = Banks(server_dsn, self.run_id)
        self._pools: dict[str, AsyncConnectionPool] = {}

    async def provision(self, cleanup: AsyncExitStack, progress: Progress) -> tuple[Sequence[str], Sequence[Service]]:
        return (), await self.banks.provision(cleanup, progress)

    async def populate(self, progress: Progress) -> None:
        await self.banks.open_accounts(self._running, progress)

    def branches(self, worker: int, seq: int) -> list[Branch]:
        return self.banks.branches(self.banks.transfer())

    async def open(self, concurrency: int) -> None:
        await super().open(concurrency)
        for bank, dsn in self.banks.dsns.items():
            pool = AsyncConnectionPool(
                dsn,
                min_size=concurrency,
                max_size=concurrency,
                open=False,
                kwargs={"autocommit": True},
                configure=_configure,
                name=bank,
            )
            self._pools[bank] = pool
            await pool.open(wait=True, timeout=60)

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            await pool.close()
        await super().close()

    async def baseline(self, worker: int, seq: int) -> bool:
        gtid = self.baseline_gtid()
        entries = dict(zip(self.banks.names, self.banks.transfer(), strict=True))
        async with AsyncExitStack() as held:
            conns = {}
            for bank in entries:
                conns[bank] = conn = await self._pools[bank].getconn()
                held.push_async_callback(self._pools[bank].putconn, conn)
            votes = await asyncio.gather(
                *(_prepare(conns[bank], gtid, bank, entry) for bank, entry in entries.items()), return_exceptions=True
            )
            prepared = [bank for bank, vote in zip(entries, votes, strict=True) if vote is True]
            if len(prepared) == len(entries):
                await asyncio.gather(*(_finish(conns[bank], gtid, bank, "COMMIT") for bank in prepared))
                return True
            await asyncio.gather(*(_finish(conns[bank], gtid, bank, "ROLLBACK") for bank in prepared))
        for vote in votes:
            if isinstance(vote, BaseException):
                raise vote
        return False


async def _configure(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("SELECT set_config('lock_timeout', %s, false)", [_LOCK_TIMEOUT])


def _gid(conn: psycopg.AsyncConnection, gtid: str, bank: str) -> str:
    # Prepared transaction ids are server-wide, not per database.
    return Escaping(conn.pgconn).escape_literal(f"{gtid}:{bank}".encode()).decode()


async def _prepare(conn: psycopg.AsyncConnection, gtid: str, bank: str, entry: Entry) -> bool:
    """BEGIN, the bank's work and PREPARE TRANSACTION in one query, as the bank sends
    them; False (rolled back) where the bank would vote no."""
    work = bank_statement(gtid, bank, entry.model_dump())
    assert not isinstance(work, PrepareResult), "the bench's entries are valid"
    query, params = work
    bound = psycopg.AsyncClientCursor(conn).mogrify(query, params)
    try:
        await conn.execute(f"BEGIN; {bound}; PREPARE TRANSACTION {_gid(conn, gtid, bank)}".encode())
    except BaseException as exc:
        with suppress(psycopg.Error):
            await conn.execute("ROLLBACK")
        if isinstance(exc, psycopg.errors.RaiseException):
            return False  # the bank's refusal: a no vote
        raise
    return True


async def _finish(conn: psycopg.AsyncConnection, gtid: str, bank: str, action: str) -> None:
    await conn.execute(f"{action} PREPARED {_gid(conn, gtid, bank)}".encode())
