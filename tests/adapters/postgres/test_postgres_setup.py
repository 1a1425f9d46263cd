"""Start-up refuses clearly what cannot work: no server, no prepared transactions
allowed, too few of them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.postgres import PostgresResource, PostgresSetupError
from adapters.postgres.testing import database_dsn
from compose.dev import postgres as dev_postgres
from compose.supervisor import free_port, twopc_command


async def test_a_server_allowing_fewer_prepared_transactions_than_the_pool_is_refused(database: str) -> None:
    resource = PostgresResource(database, "p", pool_size=500)  # the test server allows 200

    with pytest.raises(PostgresSetupError, match=r"allows 200 prepared transactions .* fewer than the 500"):
        await resource.start()


async def test_a_database_that_does_not_exist_is_refused_at_once_with_the_servers_reason(database: str) -> None:
    resource = PostgresResource(database_dsn(database, "no_such_database"), "p")

    with pytest.raises(PostgresSetupError, match='database "no_such_database" does not exist'):
        await asyncio.wait_for(resource.start(), timeout=10)


async def test_an_unreachable_server_is_refused_naming_it_without_the_password() -> None:
    dsn = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/nowhere"
    resource = PostgresResource(dsn, "p", connect_timeout=1)

    with pytest.raises(PostgresSetupError, match="cannot connect to PostgreSQL") as refused:
        await resource.start()
    assert "s3cret" not in str(refused.value)
    assert "nowhere" in str(refused.value)


@pytest.fixture
def server_without_prepared_transactions(tmp_path: Path) -> Iterator[str]:
    """A private cluster (as `twopc dev up` makes one) with max_prepared_transactions = 0."""
    info = dev_postgres.up(tmp_path)
    try:
        admin = database_dsn(info["dsn"], "postgres").replace("user=twopc", "user=postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET max_prepared_transactions = 0")  # wins over twopc.conf
        dev_postgres.down(tmp_path)
        dev_postgres.up(tmp_path)
        yield info["dsn"]
    finally:
        dev_postgres.down(tmp_path)


@pytest.mark.slow
async def test_max_prepared_transactions_zero_is_refused_with_what_to_do(
    server_without_prepared_transactions: str, tmp_path: Path
) -> None:
    resource = PostgresResource(server_without_prepared_transactions, "p")

    with pytest.raises(PostgresSetupError) as refused:
        await resource.start()

    message = str(refused.value)
    assert "max_prepared_transactions = 0" in message
    assert "set max_prepared_transactions to at least 10" in message

    # The bank service says the same and exits, instead of serving votes it cannot keep.
    bank = await asyncio.create_subprocess_exec(
        *twopc_command("bank", "serve", "--name", "bank-z", "--port", str(free_port()),
                       "--dsn", server_without_prepared_transactions, "--coordinator", "http://127.0.0.1:9",
                       "--secret", "s", "--data", str(tmp_path / "bank-z")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(bank.communicate(), timeout=60)
    assert bank.returncode == 2
    assert "max_prepared_transactions = 0" in err.decode()
