"""How the tests find their PostgreSQL server: TWOPC_TEST_POSTGRES_DSN first, else the
dev server's entry in var/dev/services.json; neither answering is a failure that says
what to do, never a skip."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.postgres import testing
from adapters.postgres.testing import DSN_ENV_VAR, database_dsn, drop_database, scratch_database, server_dsn
from compose.supervisor import free_port
from twopc_core.testing import wait_until


def test_the_environment_variable_wins(pg_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TWOPC_DEV_DIR", str(tmp_path))  # no services.json there
    monkeypatch.setenv(DSN_ENV_VAR, pg_server)

    assert server_dsn() == pg_server


def test_no_server_at_all_fails_saying_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TWOPC_DEV_DIR", str(tmp_path))
    monkeypatch.delenv(DSN_ENV_VAR, raising=False)

    with pytest.raises(RuntimeError, match=r"twopc dev up postgres.*TWOPC_TEST_POSTGRES_DSN"):
        server_dsn()


def test_a_server_that_does_not_answer_fails_naming_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DSN_ENV_VAR, f"postgresql://twopc@127.0.0.1:{free_port()}/twopc_test")

    with pytest.raises(RuntimeError, match=f"from {DSN_ENV_VAR} does not answer"):
        server_dsn()


async def test_a_scratch_database_is_dropped_with_what_was_left_prepared_in_it(pg_server: str) -> None:
    async with scratch_database(pg_server, "scratch") as dsn:
        conn = await psycopg.AsyncConnection.connect(dsn)
        await conn.tpc_begin(f"left-behind-{testing.secrets.token_hex(4)}")
        await conn.execute("SELECT 1")
        await conn.tpc_prepare()
        await conn.close()
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]

    with psycopg.connect(pg_server) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None
        assert conn.execute("SELECT 1 FROM pg_prepared_xacts WHERE database = %s", [name]).fetchone() is None


def _gone(server: str, name: str) -> bool:
    with psycopg.connect(server) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None


async def test_a_scratch_database_is_dropped_while_its_role_still_has_sessions_in_it(pg_server: str) -> None:
    async with scratch_database(pg_server, "scratch") as dsn:
        left_open = await psycopg.AsyncConnection.connect(dsn)
        name = conninfo_to_dict(dsn)["dbname"]

    assert _gone(pg_server, name)
    with pytest.raises(psycopg.OperationalError):
        await left_open.execute("SELECT 1")


async def test_dropping_a_database_that_is_already_gone_does_nothing(pg_server: str) -> None:
    await drop_database(pg_server, f"twopc_never_{testing.secrets.token_hex(4)}")


@asynccontextmanager
async def autovacuum_every_second(superuser: str) -> AsyncIterator[None]:
    with psycopg.connect(superuser, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET autovacuum_naptime = '1s'")
        conn.execute("SELECT pg_reload_conf()")
        try:
            yield
        finally:
            conn.execute("ALTER SYSTEM RESET autovacuum_naptime")
            conn.execute("SELECT pg_reload_conf()")


async def test_a_database_is_dropped_while_an_autovacuum_worker_is_in_it(pg_server: str) -> None:
    """A role that is not a superuser may not end an autovacuum worker, so a drop
    ``WITH (FORCE)`` fails while one runs; the drop must not. (Changing the autovacuum
    pace takes the server's superuser: the dev server's.)"""
    superuser = make_conninfo(pg_server, user="postgres", dbname="postgres")
    name = f"twopc_vacuumed_{testing.secrets.token_hex(4)}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(database_dsn(pg_server, name), autocommit=True) as conn:
        # Slow to vacuum on purpose, so the worker is still there when the drop comes.
        conn.execute(
            "CREATE TABLE t (x int)"
            " WITH (autovacuum_vacuum_cost_delay = 20, autovacuum_vacuum_cost_limit = 1)"
        )
        conn.execute("INSERT INTO t SELECT generate_series(1, 300000)")
        conn.execute("DELETE FROM t")

    def vacuuming() -> bool:
        with psycopg.connect(superuser) as conn:
            row = conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND backend_type = 'autovacuum worker'", [name]
            ).fetchone()
            return row is not None

    async with autovacuum_every_second(superuser):
        await wait_until(vacuuming, timeout=30, interval=0.1, message="an autovacuum worker in the database")
        await drop_database(pg_server, name)

    assert _gone(pg_server, name)
