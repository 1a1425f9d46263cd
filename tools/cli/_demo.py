"""``twopc demo``: the coordinator on its SQLite log with two mock-queue participants, or
``--replicas N`` coordinator replicas sharing a log in the dev PostgreSQL."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from compose.localcluster import LocalCluster

__all__ = ["demo"]


def demo(
    directory: Annotated[Path, typer.Option("--dir", help="where the demo keeps its data and logs")] = Path("var/demo"),
    port: Annotated[int, typer.Option(help="the (first) coordinator's port; the rest take the next ones")] = 7070,
    secret: Annotated[str, typer.Option(help="shared secret of the demo participants")] = "change-me",
    replicas: Annotated[
        int, typer.Option(min=1, max=9, help="coordinator replicas (more than one share a log in the dev PostgreSQL)")
    ] = 1,
    log_dsn: Annotated[
        str | None,
        typer.Option(
            "--log-dsn",
            help=(
                "a PostgreSQL database for the coordinators' log"
                " (default: SQLite for one; for several, a database in the dev PostgreSQL)"
            ),
        ),
    ] = None,
) -> None:
    """Run the coordinator (or N replicas) with participants queue-a and queue-b until Ctrl-C."""
    if replicas > 1 and log_dsn is None:
        log_dsn = _shared_log()
    cluster = LocalCluster(directory, secret=secret, coordinator_port=port, replicas=replicas, log_dsn=log_dsn)
    # SIGTERM stops it as Ctrl-C does (an Event set from a handler can deadlock the wait).
    signal.signal(signal.SIGTERM, _interrupt)
    coordinators = ", ".join(cluster.replica_names)
    try:
        typer.echo(f"starting {coordinators} and queue-a, queue-b (data and logs in {cluster.directory}) ...")
        cluster.start()
        lines = [f"  {name:<12} {cluster.url(name)}" for name in cluster.replica_names]
        if log_dsn is not None:
            lines.append(f"  (the replicas share the log {log_dsn})")
        typer.echo(
            "twopc demo is up:\n"
            + "\n".join(lines)
            + f"\n  queue-a      {cluster.url('queue-a')}   committed items: GET /queue/items\n"
            f"  queue-b      {cluster.url('queue-b')}\n"
            f"Bearer tokens, one per role, in {cluster.directory}/: client.token (begin, commit, read its own),\n"
            "  reader.token (read and list all), operator.token (also resolve). For example:\n"
            f"  export TWOPC_TOKEN=$(cat {cluster.directory}/client.token)\n"
            f'  curl -s -H "Authorization: Bearer $TWOPC_TOKEN" {cluster.coordinator_url}/v1/transactions/GTID\n'
            f"The admin page: {cluster.coordinator_url}/ui (sign in with reader.token or operator.token).\n"
            "Try the curl examples in README.md. Ctrl-C stops everything."
        )
        gone: set[str] = set()
        while True:
            time.sleep(0.5)
            for node in cluster.nodes.values():
                if node.running or node.name in gone:
                    continue
                if replicas > 1 and node.name in cluster.replica_names and len(gone) + 1 < replicas:
                    # The point of replicas: the others go on, and take its work over.
                    gone.add(node.name)
                    typer.echo(f"{node.name} exited (see {node.log_path}); the other replicas go on", err=True)
                    continue
                typer.echo(f"{node.name} exited; see {node.log_path}", err=True)
                raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    except typer.Exit:
        raise
    except (RuntimeError, TimeoutError) as exc:
        typer.echo(f"twopc demo: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        cluster.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _shared_log() -> str:
    """The dev PostgreSQL's log database, for the replicas to share."""
    from compose.dev import read_services
    from compose.dev.postgres import DATABASES

    server = read_services().get("postgres")
    if not server:
        typer.echo("twopc demo: several replicas share a PostgreSQL log: run `twopc dev up postgres` first", err=True)
        raise typer.Exit(2)
    from psycopg.conninfo import make_conninfo

    return make_conninfo(server["dsn"], dbname=DATABASES[-1])
