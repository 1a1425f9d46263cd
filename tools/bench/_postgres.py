"""The postgres workload: transfers between two banks, each a bank service on a database
of its own; the baseline runs the same statements on the two databases directly, with
PostgreSQL's own two-phase commit and no coordinator."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import aiohttp
import psycopg
from psycopg_pool import AsyncConnectionPool

from adapters.postgres.bank import Entry, apply_entry
from compose.localcluster import LocalCluster, Service
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
        "the same transfer straight on the two databases: on each, BEGIN, the bank's insert into "
        "applied_transfers and its UPDATE of the balance, PREPARE TRANSACTION; then COMMIT PREPARED on both "
        "(psycopg, a pool per database with a connection per client)"
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
                dsn, min_size=concurrency, max_size=concurrency, open=False, configure=_configure, name=bank
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
                # Not pool.connection(): its exit commits, which psycopg refuses on a
                # connection that ran a two-phase transaction.
                conns[bank] = conn = await self._pools[bank].getconn()
                held.push_async_callback(self._pools[bank].putconn, conn)
            votes = await asyncio.gather(
                *(_prepare(conns[bank], gtid, bank, entry) for bank, entry in entries.items()), return_exceptions=True
            )
            prepared = [bank for bank, vote in zip(entries, votes, strict=True) if vote is True]
            if len(prepared) == len(entries):
                await asyncio.gather(*(conns[bank].tpc_commit() for bank in prepared))
                return True
            await asyncio.gather(*(conns[bank].tpc_rollback() for bank in prepared))
        for vote in votes:
            if isinstance(vote, BaseException):
                raise vote
        return False


async def _configure(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("SELECT set_config('lock_timeout', %s, false)", [_LOCK_TIMEOUT])
    await conn.commit()


async def _prepare(conn: psycopg.AsyncConnection, gtid: str, bank: str, entry: Entry) -> bool:
    """BEGIN, the bank's statements, PREPARE TRANSACTION; False (rolled back) where the bank would vote no."""
    await conn.tpc_begin(f"{gtid}:{bank}")  # prepared transaction ids are server-wide, not per database
    try:
        result = await apply_entry(conn, gtid, entry)
    except BaseException:
        with suppress(psycopg.Error):
            await conn.tpc_rollback()  # not prepared yet: a plain ROLLBACK
        raise
    if result.vote != "yes":
        await conn.tpc_rollback()
        return False
    await conn.tpc_prepare()
    return True
