"""``twopc events serve``: the events example service, Kafka as a 2PC participant."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tools.cli._options import (
    CoordinatorCa,
    CoordinatorCert,
    CoordinatorKey,
    CoordinatorUrls,
    DataDir,
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

app = typer.Typer(help="The events example: Kafka messages in global transactions.", no_args_is_help=True)


@app.command("serve")
def serve(
    name: Name,
    port: Port,
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]")],
    coordinator: CoordinatorUrls,
    secret: Secret,
    data: DataDir = None,
    host: Host = "127.0.0.1",
    inquiry_interval: InquiryInterval = 5.0,
    stage_topic: Annotated[
        str | None, typer.Option(help="the compacted stage topic (default _twopc_stage.NAME)")
    ] = None,
    shards: Annotated[int, typer.Option(help="partitions of the stage topic when it is created", min=1)] = 4,
    replication_factor: Annotated[
        int, typer.Option(help="replication factor of the stage topic when it is created (production: 3)", min=1)
    ] = 1,
    min_insync_replicas: Annotated[
        int, typer.Option(help="min.insync.replicas of the stage topic when it is created (production: 2)", min=1)
    ] = 1,
    offset_group: Annotated[
        list[str] | None,
        typer.Option(
            help="a consumer group a branch may commit offsets for (a name, or a prefix ending in *); "
            "repeat for several [default: any group]"
        ),
    ] = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
    coordinator_ca: CoordinatorCa = None,
    coordinator_cert: CoordinatorCert = None,
    coordinator_key: CoordinatorKey = None,
    metrics: Metrics = True,
    log_format: LogFormat = "auto",
) -> None:
    """Serve Kafka as a participant: the protocol at /twopc, POST /events, GET /events/TOPIC."""
    from adapters.kafka.events import run

    telemetry.setup(f"twopc-events-{name}", log_format=log_format)
    run(
        name=name,
        host=host,
        port=port,
        bootstrap=bootstrap,
        coordinator_url=coordinator,
        secret=secret,
        data_dir=data or Path("var") / name,
        inquiry_interval=inquiry_interval,
        stage_topic=stage_topic,
        shards=shards,
        replication_factor=replication_factor,
        min_insync_replicas=min_insync_replicas,
        offset_groups=tuple(offset_group) if offset_group else None,
        ssl_context=server_tls(tls_cert, tls_key, tls_client_ca),
        coordinator_ssl=client_tls(coordinator_ca, coordinator_cert, coordinator_key),
        metrics=metrics,
    )
