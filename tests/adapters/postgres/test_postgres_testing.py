"""How the tests find their PostgreSQL server: TWOPC_TEST_POSTGRES_DSN first, else the
dev server's entry in var/dev/services.json; neither answering is a failure that says
what to do, never a skip."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from adapters.postgres import testing
from adapters.postgres.testing import DSN_ENV_VAR, scratch_database, server_dsn
from compose.supervisor import free_port


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
