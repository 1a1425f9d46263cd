"""A private PostgreSQL server for development and tests: ``twopc dev up postgres``.

It never touches the system's clusters or their configuration: ``initdb`` makes a
cluster of its own in ``{state_dir}/postgres/data`` (owned by the ``postgres`` OS user
when run as root, since the server refuses to run as root), listening on 127.0.0.1 only,
on a port chosen free at the first ``up`` and kept, with ``max_prepared_transactions``
set so that two-phase commit works. ``up`` reuses a server that is already running,
creates the role ``twopc`` and the databases the tests and the bank example use, and
returns how to reach them. ``down`` stops the server; its data stays for the next ``up``.

The server binaries are found at run time (``TWOPC_PG_BINDIR``, ``pg_config --bindir``,
the newest ``/usr/lib/postgresql/*/bin``, or ``PATH``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from compose.supervisor import free_port

__all__ = [
    "DATABASES",
    "MAX_CONNECTIONS",
    "MAX_PREPARED_TRANSACTIONS",
    "ROLE",
    "down",
    "dsn",
    "find_bindir",
    "restart",
    "status",
    "up",
]

ROLE = "twopc"
#: twopc_test for the test suite (which makes more as it needs), bank_a and bank_b for the bank
#: example, twopc_log for the log the demo's coordinator replicas share.
DATABASES = ("twopc_test", "bank_a", "bank_b", "twopc_log")
MAX_CONNECTIONS = 200
#: At least max_connections: every session may leave one prepared transaction behind.
MAX_PREPARED_TRANSACTIONS = 200
#: The superuser initdb creates; only ``up`` uses it, to create the role and databases.
_SUPERUSER = "postgres"
_START_TIMEOUT = 60.0
#: A unix socket path must fit in sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 100
#: Debian's layout: one bin directory per installed major version.
_VERSIONED_BINDIRS = "/usr/lib/postgresql/*/bin"


@dataclass(frozen=True)
class _Server:
    base: Path
    bindir: Path
    os_user: str | None  # run the server's programs as this user (None: as ourselves)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    @property
    def settings_file(self) -> Path:
        return self.base / "server.json"

    def run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / program), *args]
        if self.os_user is not None:
            argv = ["runuser", "-u", self.os_user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{program} failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")
        return result


def find_bindir() -> Path:
    """Where initdb, pg_ctl and postgres are; RuntimeError saying how to get them if nowhere."""
    candidates: list[Path] = []
    if os.environ.get("TWOPC_PG_BINDIR"):
        candidates.append(Path(os.environ["TWOPC_PG_BINDIR"]))
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10).stdout
            if out.strip():
                candidates.append(Path(out.strip()))
    versions = sorted((Path(p) for p in glob.glob(_VERSIONED_BINDIRS)), key=_version_key, reverse=True)
    candidates.extend(versions)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all((bindir / p).exists() for p in ("initdb", "pg_ctl", "postgres")):
            return bindir
    raise RuntimeError(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found: install the server "
        "(e.g. `apt-get install postgresql`) or set TWOPC_PG_BINDIR"
    )


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name)) or (0,)


def _server(state_dir: Path) -> _Server:
    base = Path(state_dir).resolve() / "postgres"
    os_user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("running as root, but there is no 'postgres' OS user to run the server as") from None
        os_user = "postgres"
    return _Server(base, find_bindir(), os_user)


# -- the public functions (see compose.dev) ----------------------------------------------


def up(state_dir: Path) -> dict[str, Any]:
    """Start the server (or reuse the running one), wait until it answers, make the role
    and databases, and return how to reach them."""
    server = _server(state_dir)
    _prepare_base(server)
    port = _port(server)
    if not _initialised(server):
        _initdb(server)
    _write_config(server, port)
    if _running(server) and _answers(port):
        _progress(f"reusing the server on port {port}")
    else:
        _start(server, port)
    _create_role_and_databases(port)
    return _info(server, port)


def restart(state_dir: Path, downtime: float = 0.0) -> dict[str, Any]:
    """Stop the server and start it again: same port, same data, prepared transactions kept."""
    down(state_dir)
    time.sleep(downtime)
    return up(state_dir)


def down(state_dir: Path) -> None:
    """Stop the server ``up`` started (fast shutdown: sessions are ended, data is kept)."""
    server = _server(state_dir)
    if not server.data.exists():
        return
    _remove_stale_pid_file(server)  # so that pg_ctl never signals a program that reused the pid
    if not _running(server):
        return
    server.run("pg_ctl", "stop", "-D", str(server.data), "-m", "fast", "-w", "-t", "60")


def status(state_dir: Path) -> dict[str, Any] | None:
    """How to reach the server if it is running and answering, else None."""
    server = _server(state_dir)
    if not server.settings_file.exists() or not server.data.exists() or not _running(server):
        return None
    port = _port(server)
    return _info(server, port) if _answers(port) else None


# -- steps -------------------------------------------------------------------------------


def _info(server: _Server, port: int) -> dict[str, Any]:
    return {
        "dsn": dsn(port, DATABASES[0]),
        "host": "127.0.0.1",
        "port": port,
        "user": ROLE,
        "databases": list(DATABASES),
        "data_dir": str(server.data),
        "max_prepared_transactions": MAX_PREPARED_TRANSACTIONS,
    }


def dsn(port: int, database: str, user: str = ROLE) -> str:
    return f"postgresql://{user}@127.0.0.1:{port}/{database}"


def _progress(message: str) -> None:
    print(f"postgres: {message}", file=sys.stderr, flush=True)


def _prepare_base(server: _Server) -> None:
    server.base.mkdir(parents=True, exist_ok=True)
    if server.os_user is None:
        return
    user = pwd.getpwnam(server.os_user)
    os.chown(server.base, user.pw_uid, user.pw_gid)
    # The server user must be able to reach its directory: give search (x, not read)
    # permission to the ancestors that lack it, and say so.
    for parent in reversed(server.base.parents):
        if not _can_traverse(parent, user):
            mode = parent.stat().st_mode
            os.chmod(parent, mode | 0o001)
            _progress(f"gave other users search permission on {parent} so that {server.os_user} can reach its data")


def _can_traverse(directory: Path, user: pwd.struct_passwd) -> bool:
    st = directory.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid == user.pw_gid or st.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def _port(server: _Server) -> int:
    """The port chosen at the first ``up``, kept in server.json."""
    if server.settings_file.exists():
        return int(json.loads(server.settings_file.read_text())["port"])
    port = free_port()
    server.settings_file.write_text(json.dumps({"port": port}) + "\n")
    return port


def _initialised(server: _Server) -> bool:
    version_file = server.data / "PG_VERSION"
    if not version_file.exists():
        return False
    made_by = version_file.read_text().strip()
    ours = _major_version(server)
    if made_by != ours:
        raise RuntimeError(
            f"the dev cluster in {server.data} was made by PostgreSQL {made_by}, but the server binaries "
            f"in {server.bindir} are version {ours}: remove {server.data} to start afresh"
        )
    return True


def _major_version(server: _Server) -> str:
    out = server.run("postgres", "--version").stdout  # "postgres (PostgreSQL) 15.18 (Debian ...)"
    match = re.search(r"\) (\d+)(?:\.\d+)?", out)
    if match is None:
        raise RuntimeError(f"cannot tell the server's version from {out.strip()!r}")
    return match.group(1)


def _initdb(server: _Server) -> None:
    if server.data.exists():
        # A cluster whose initdb did not finish (no PG_VERSION): nothing in it is worth keeping.
        shutil.rmtree(server.data)
    _progress(f"initdb into {server.data}")
    server.run(
        "initdb",
        "-D",
        str(server.data),
        "-U",
        _SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--no-locale",
    )
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write("\n# Settings of the twopc dev server, rewritten by every `twopc dev up`.\ninclude 'twopc.conf'\n")


def _write_config(server: _Server, port: int) -> None:
    socket_dir = str(server.data)
    if len(f"{socket_dir}/.s.PGSQL.{port}") > _MAX_SOCKET_PATH:
        socket_dir = ""  # too long a path for a socket: TCP on loopback only
    text = "\n".join(
        [
            "listen_addresses = '127.0.0.1'",
            f"port = {port}",
            f"unix_socket_directories = '{socket_dir}'",
            f"max_connections = {MAX_CONNECTIONS}",
            f"max_prepared_transactions = {MAX_PREPARED_TRANSACTIONS}",
            "fsync = on",
            "synchronous_commit = on",
            "",
        ]
    )
    path = server.data / "twopc.conf"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
        if server.os_user is not None:
            user = pwd.getpwnam(server.os_user)
            os.chown(path, user.pw_uid, user.pw_gid)


def _running(server: _Server) -> bool:
    # pg_ctl status reads postmaster.pid and checks that the process is alive.
    return server.run("pg_ctl", "status", "-D", str(server.data), check=False).returncode == 0


def _answers(port: int, database: str = "postgres") -> bool:
    try:
        with psycopg.connect(dsn(port, database, _SUPERUSER), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _remove_stale_pid_file(server: _Server) -> None:
    """A server killed with its machine leaves postmaster.pid behind; if its pid now
    belongs to another program, PostgreSQL would refuse to start (and pg_ctl would
    signal that program)."""
    pid_file = server.data / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        program = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        program = ""  # no such process: PostgreSQL copes with that itself
    if program and program not in ("postgres", "postmaster"):
        _progress(f"removing a stale postmaster.pid (its pid {pid} is now {program!r})")
        pid_file.unlink(missing_ok=True)


def _start(server: _Server, port: int) -> None:
    _remove_stale_pid_file(server)
    _progress(f"starting on 127.0.0.1:{port} (log: {server.log})")
    # -W: we wait ourselves, with progress and a look at the log if the server dies.
    server.run("pg_ctl", "start", "-D", str(server.data), "-l", str(server.log), "-W")
    started = time.monotonic()
    next_note = started + 5
    while not _answers(port):
        now = time.monotonic()
        if now - started > 1 and not _running(server):
            raise RuntimeError(f"the server exited while starting; last lines of {server.log}:\n{_tail(server.log)}")
        if now - started > _START_TIMEOUT:
            raise RuntimeError(f"the server did not accept connections within {_START_TIMEOUT:.0f}s; see {server.log}")
        if now >= next_note:
            _progress(f"waiting for the server to accept connections ({now - started:.0f}s)")
            next_note = now + 5
        time.sleep(0.1)
    _progress(f"accepting connections after {time.monotonic() - started:.1f}s")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read it: {exc})"


def _create_role_and_databases(port: int) -> None:
    with psycopg.connect(dsn(port, "postgres", _SUPERUSER), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE]).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(ROLE)))
        for name in DATABASES:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE)))
