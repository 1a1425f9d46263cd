"""``twopc demo``: the coordinator on its SQLite log with two mock-queue participants."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from compose.localcluster import LocalCluster

__all__ = ["demo"]


def demo(
    directory: Annotated[Path, typer.Option("--dir", help="where the demo keeps its data and logs")] = Path("var/demo"),
    port: Annotated[int, typer.Option(help="the coordinator's port; the queues take the next two")] = 7070,
    secret: Annotated[str, typer.Option(help="shared secret of the demo participants")] = "change-me",
) -> None:
    """Run the coordinator with participants queue-a and queue-b until Ctrl-C."""
    cluster = LocalCluster(directory, secret=secret, coordinator_port=port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        typer.echo(f"starting the coordinator and queue-a, queue-b (data and logs in {cluster.directory}) ...")
        cluster.start()
        typer.echo(
            f"twopc demo is up:\n"
            f"  coordinator  {cluster.coordinator_url}   (config {cluster.config_path})\n"
            f"  queue-a      {cluster.url('queue-a')}   committed items: GET /queue/items\n"
            f"  queue-b      {cluster.url('queue-b')}\n"
            "Try the curl examples in README.md. Ctrl-C stops everything."
        )
        while not stop.wait(0.5):
            for node in cluster.nodes.values():
                if not node.running:
                    typer.echo(f"{node.name} exited; see {node.log_path}", err=True)
                    raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        typer.echo(f"twopc demo: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        cluster.stop()
