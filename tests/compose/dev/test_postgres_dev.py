"""`twopc dev up|down|status postgres` on a private cluster of its own (in tmp_path), so
the server the rest of the suite uses is left alone."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from compose.dev import postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("dev")
    try:
        yield where
    finally:
        postgres.down(where)


def postmaster_pid(info: dict) -> int:
    return int(Path(info["data_dir"], "postmaster.pid").read_text().split()[0])


def test_up_makes_a_private_cluster_ready_for_two_phase_commit(state_dir: Path) -> None:
    info = postgres.up(state_dir)

    assert info["host"] == "127.0.0.1" and info["user"] == "twopc"
    assert info["dsn"] == f"postgresql://twopc@127.0.0.1:{info['port']}/twopc_test"
    assert Path(info["data_dir"]).is_relative_to(state_dir)
    for database in ("twopc_test", "bank_a", "bank_b"):
        with psycopg.connect(postgres.dsn(info["port"], database)) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == ("twopc", database)
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('max_prepared_transactions', 'listen_addresses', 'fsync', 'max_connections')"
                ).fetchall()
            )
    assert settings == {
        "max_prepared_transactions": str(postgres.MAX_PREPARED_TRANSACTIONS),
        "max_connections": str(postgres.MAX_CONNECTIONS),
        "listen_addresses": "127.0.0.1",
        "fsync": "on",
    }
    owner = Path(info["data_dir"]).stat().st_uid
    expected = pwd.getpwnam("postgres").pw_uid if os.geteuid() == 0 else os.geteuid()
    assert owner == expected


def test_up_again_reuses_the_running_server_and_status_reports_it(state_dir: Path) -> None:
    first = postgres.up(state_dir)
    pid = postmaster_pid(first)

    again = postgres.up(state_dir)

    assert again == first
    assert postmaster_pid(again) == pid  # not restarted
    assert postgres.status(state_dir) == first


def test_down_stops_it_and_the_next_up_keeps_the_port_and_the_data(state_dir: Path) -> None:
    info = postgres.up(state_dir)
    with psycopg.connect(info["dsn"], autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS survives (n int)")
        conn.execute("INSERT INTO survives VALUES (42)")

    postgres.down(state_dir)

    assert postgres.status(state_dir) is None
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(info["dsn"], connect_timeout=2)
    postgres.down(state_dir)  # stopping a stopped server is fine

    back = postgres.up(state_dir)
    assert back["port"] == info["port"]
    with psycopg.connect(back["dsn"]) as conn:
        assert conn.execute("SELECT n FROM survives").fetchall() == [(42,)]


def test_up_after_a_crash_ignores_a_stale_pid_file_whose_pid_was_reused(state_dir: Path) -> None:
    info = postgres.up(state_dir)
    pid_file = Path(info["data_dir"], "postmaster.pid")
    left_behind = pid_file.read_text()
    postgres.down(state_dir)
    # As after the machine stopped: the file is back, and its pid now belongs to another
    # program of the server's own user (which PostgreSQL would take for a live server).
    as_server_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    squatter = subprocess.Popen([*as_server_user, "sleep", "60"])
    try:
        squatter_pid = _child_pid(squatter.pid) if as_server_user else squatter.pid
        pid_file.write_text(f"{squatter_pid}\n" + left_behind.split("\n", 1)[1])

        again = postgres.up(state_dir)

        assert postmaster_pid(again) != squatter_pid
        with psycopg.connect(again["dsn"]) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        squatter.kill()
        squatter.wait()


def _child_pid(parent: int) -> int:
    """The pid of runuser's child (the program it runs as the other user)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children")
        if children.exists() and children.read_text().split():
            return int(children.read_text().split()[0])
        time.sleep(0.01)  # polling /proc for the child to exist, bounded by the deadline
    raise TimeoutError("runuser started no child")


def test_find_bindir_honours_the_override_and_refuses_a_directory_without_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = postgres.find_bindir()
    assert (real / "initdb").exists() and (real / "pg_ctl").exists()

    monkeypatch.setenv("TWOPC_PG_BINDIR", str(real))
    assert postgres.find_bindir() == real

    monkeypatch.setenv("TWOPC_PG_BINDIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postgres, "_VERSIONED_BINDIRS", str(tmp_path / "none" / "*" / "bin"))
    with pytest.raises(RuntimeError, match="TWOPC_PG_BINDIR"):
        postgres.find_bindir()
