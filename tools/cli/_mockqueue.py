"""``twopc mockqueue serve``: a durable mock queue as a 2PC participant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tools.cli._options import (
    CoordinatorCa,
    CoordinatorCert,
    CoordinatorKey,
    CoordinatorUrls,
    Host,
    InquiryInterval,
    LogFormat,
    Metrics,
    Name,
    Port,
    Secret,
    TlsCert,
    TlsClientCa,
    TlsKey,
    client_tls,
    server_tls,
)
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
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
    coordinator_ca: CoordinatorCa = None,
    coordinator_cert: CoordinatorCert = None,
    coordinator_key: CoordinatorKey = None,
    metrics: Metrics = True,
    log_format: LogFormat = "auto",
) -> None:
    """Serve a mock queue: the participant protocol at /twopc, committed items at /queue/items."""
    from adapters.mockqueue.service import run

    telemetry.setup(f"twopc-mockqueue-{name}", log_format=log_format)
    run(
        name=name,
        host=host,
        port=port,
        data_dir=data,
        coordinator_url=coordinator,
        secret=secret,
        inquiry_interval=inquiry_interval,
        ssl_context=server_tls(tls_cert, tls_key, tls_client_ca),
        coordinator_ssl=client_tls(coordinator_ca, coordinator_cert, coordinator_key),
        metrics=metrics,
    )
