"""``twopc pipeline serve``: the pipeline example, consume → process → produce exactly once."""

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
    LogFormat,
    Port,
    TlsCert,
    TlsClientCa,
    TlsKey,
    Token,
    client_tls,
    server_tls,
)
from twopc_core import telemetry

__all__ = ["app", "serve"]

app = typer.Typer(help="The pipeline example: Kafka reads inside global transactions.", no_args_is_help=True)


@app.command("serve")
def serve(
    port: Port,
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]")],
    coordinator: CoordinatorUrls,
    bank: Annotated[str, typer.Option(help="the bank's base URL (its ledger books each event)")],
    events: Annotated[str, typer.Option(help="the Kafka participant's name, as the coordinator knows it")],
    group: Annotated[str, typer.Option(help="the consumer group")] = "pipeline",
    input_topic: Annotated[str, typer.Option("--input", help="the topic of order events")] = "orders",
    output_topic: Annotated[str, typer.Option("--output", help="the topic accepted orders go to")] = "order-accepted",
    max_batch: Annotated[int, typer.Option(help="records per batch (one global transaction) at most", min=1)] = 100,
    transaction_timeout_ms: Annotated[
        int, typer.Option(help="the coordinator aborts a batch not committed by then", min=1)
    ] = 30_000,
    session_timeout_ms: Annotated[
        int,
        typer.Option(help="how long the group waits for a crashed instance before its partitions move on", min=1),
    ] = 10_000,
    host: Host = "127.0.0.1",
    token: Token = None,
    unsafe_offsets_after_commit: Annotated[
        bool,
        typer.Option(
            hidden=True,
            help="a build broken on purpose (at-least-once: offsets committed after the transaction), for chaos runs",
        ),
    ] = False,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
    coordinator_ca: CoordinatorCa = None,
    coordinator_cert: CoordinatorCert = None,
    coordinator_key: CoordinatorKey = None,
    bank_ca: Annotated[
        Path | None,
        typer.Option("--bank-ca", help="trust only this CA (PEM) for an https bank [default: the system's CAs]"),
    ] = None,
    bank_cert: Annotated[
        Path | None, typer.Option("--bank-cert", help="a client certificate (PEM) to present to an https bank")
    ] = None,
    bank_key: Annotated[Path | None, typer.Option("--bank-key", help="the key of --bank-cert (PEM)")] = None,
    log_format: LogFormat = "auto",
) -> None:
    """Read order events, book each in the bank's ledger and publish it accepted, exactly once."""
    from adapters.kafka.pipeline import run

    telemetry.setup(f"twopc-pipeline-{group}", log_format=log_format)
    run(
        host,
        port,
        bootstrap=bootstrap,
        coordinator_url=coordinator,
        coordinator_token=token,
        bank_url=bank,
        kafka_participant=events,
        group=group,
        input_topic=input_topic,
        output_topic=output_topic,
        max_batch=max_batch,
        transaction_timeout_ms=transaction_timeout_ms,
        session_timeout_ms=session_timeout_ms,
        unsafe_offsets_after_commit=unsafe_offsets_after_commit,
        ssl_context=server_tls(tls_cert, tls_key, tls_client_ca),
        coordinator_ssl=client_tls(coordinator_ca, coordinator_cert, coordinator_key),
        bank_ssl=client_tls(bank_ca, bank_cert, bank_key, options="--bank-ca/-cert/-key"),
    )
