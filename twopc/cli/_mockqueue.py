"""``twopc mockqueue serve``: a durable mock queue as a 2PC participant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from twopc import telemetry

app = typer.Typer(help="The mock queue participant.", no_args_is_help=True)


@app.command("serve")
def serve(
    name: Annotated[str, typer.Option(help="the participant's name, as registered with the coordinator")],
    port: Annotated[int, typer.Option(help="port to listen on")],
    data: Annotated[Path, typer.Option(help="directory for the queue and the participant log")],
    coordinator: Annotated[str, typer.Option(help="the coordinator's base URL")],
    secret: Annotated[str, typer.Option(help="shared secret the coordinator signs with", envvar="TWOPC_SECRET")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    inquiry_interval: Annotated[
        float, typer.Option(help="seconds a prepared branch waits before asking the coordinator")
    ] = 5.0,
) -> None:
    """Serve a mock queue: the participant protocol at /twopc, committed items at /queue/items."""
    from adapters.mockqueue.service import run

    telemetry.setup(f"twopc-mockqueue-{name}")
    run(
        name=name,
        host=host,
        port=port,
        data_dir=data,
        coordinator_url=coordinator,
        secret=secret,
        inquiry_interval=inquiry_interval,
    )
