"""``twopc demo``: the coordinator on its SQLite log with two mock-queue participants."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from twopc.supervisor import Node, twopc_command

_CONFIG = """\
node_id = "c1"

[server]
host = "127.0.0.1"
port = {port}

[log]
store = "sqlite"
path = "{dir}/coordinator.db"

[[participants]]
name = "queue-a"
url = "http://127.0.0.1:{port_a}/twopc"
secret = "{secret}"

[[participants]]
name = "queue-b"
url = "http://127.0.0.1:{port_b}/twopc"
secret = "{secret}"
"""


def demo(
    directory: Annotated[Path, typer.Option("--dir", help="where the demo keeps its data and logs")] = Path("var/demo"),
    port: Annotated[int, typer.Option(help="the coordinator's port; the queues take the next two")] = 7070,
    secret: Annotated[str, typer.Option(help="shared secret of the demo participants")] = "change-me",
) -> None:
    """Run the coordinator with participants queue-a and queue-b until Ctrl-C."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    port_a, port_b = port + 1, port + 2
    config = directory / "twopc.toml"
    config.write_text(_CONFIG.format(port=port, port_a=port_a, port_b=port_b, secret=secret, dir=directory))
    coordinator_url = f"http://127.0.0.1:{port}"
    nodes = [
        Node(
            name,
            twopc_command(
                "mockqueue", "serve", "--name", name, "--port", str(queue_port), "--data", str(directory / name),
                "--coordinator", coordinator_url, "--secret", secret,
            ),
            ready_url=f"http://127.0.0.1:{queue_port}/healthz",
            log_path=directory / f"{name}.log",
        )
        for name, queue_port in (("queue-a", port_a), ("queue-b", port_b))
    ]
    nodes.append(
        Node(
            "coordinator",
            twopc_command("serve", "--config", str(config)),
            ready_url=f"{coordinator_url}/readyz",
            log_path=directory / "coordinator.log",
        )
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_ready()
        typer.echo(
            f"twopc demo is up (data and logs in {directory}):\n"
            f"  coordinator  {coordinator_url}   (config {config})\n"
            f"  queue-a      http://127.0.0.1:{port_a}   items: GET /queue/items\n"
            f"  queue-b      http://127.0.0.1:{port_b}\n"
            "Try the curl examples in README.md. Ctrl-C stops everything."
        )
        while not stop.wait(0.5):
            for node in nodes:
                if not node.running:
                    typer.echo(f"{node.name} exited; see {node.log_path}", err=True)
                    raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    except (RuntimeError, TimeoutError) as exc:
        typer.echo(f"twopc demo: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        for node in reversed(nodes):
            node.stop()
