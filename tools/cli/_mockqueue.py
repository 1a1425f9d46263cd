"""``twopc mockqueue serve``: a durable mock queue as a 2PC participant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tools.cli._options import CoordinatorUrls, Host, InquiryInterval, Name, Port, Secret
from twopc_core import telemetry

__all__ = ["app", "serve"]

app = typer.Typer(help="The mock queue participant.", no_args_is_help=True)


@app.command("serve")
def serve(
    name: Name,
    port: Port,
    data: Annotated[Path, typer.Option(help="directory for the queue and the participant log")],
    coordinator: CoordinatorUrls,
    secret: Secret,
    host: Host = "127.0.0.1",
    inquiry_interval: InquiryInterval = 5.0,
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
