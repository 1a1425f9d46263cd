"""``twopc bank serve|transfer``: the bank example, accounts in PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from tools.cli._options import (
    DEFAULT_COORDINATOR,
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
    OptionalCoordinatorUrls,
    Port,
    Secret,
    TlsCert,
    TlsClientCa,
    TlsKey,
    Token,
    client_tls,
    server_tls,
)
from twopc_core import telemetry

__all__ = ["app", "serve", "transfer"]

app = typer.Typer(help="The bank example: accounts in PostgreSQL as a 2PC participant.", no_args_is_help=True)


@app.command("serve")
def serve(
    name: Name,
    port: Port,
    dsn: Annotated[str, typer.Option(help="the bank's PostgreSQL database", envvar="TWOPC_BANK_DSN")],
    coordinator: CoordinatorUrls,
    secret: Secret,
    data: DataDir = None,
    host: Host = "127.0.0.1",
    inquiry_interval: InquiryInterval = 5.0,
    sweep_interval: Annotated[
        float, typer.Option(help="seconds between looks at the database for prepared branches the log lost")
    ] = 60.0,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_client_ca: TlsClientCa = None,
    coordinator_ca: CoordinatorCa = None,
    coordinator_cert: CoordinatorCert = None,
    coordinator_key: CoordinatorKey = None,
    metrics: Metrics = True,
    log_format: LogFormat = "auto",
) -> None:
    """Serve a bank: the participant protocol at /twopc, accounts at /accounts."""
    from adapters.postgres.bank import run

    telemetry.setup(f"twopc-bank-{name}", log_format=log_format)
    run(
        name=name,
        host=host,
        port=port,
        dsn=dsn,
        coordinator_url=coordinator,
        secret=secret,
        data_dir=data or Path("var") / name,
        inquiry_interval=inquiry_interval,
        sweep_interval=sweep_interval,
        ssl_context=server_tls(tls_cert, tls_key, tls_client_ca),
        coordinator_ssl=client_tls(coordinator_ca, coordinator_cert, coordinator_key),
        metrics=metrics,
    )


@app.command("transfer")
def transfer(
    source: Annotated[str, typer.Option("--from", help="BANK:ACCOUNT to debit")],
    target: Annotated[str, typer.Option("--to", help="BANK:ACCOUNT to credit")],
    amount: Annotated[int, typer.Option(help="how much to move", min=1)],
    coordinator: OptionalCoordinatorUrls = None,
    token: Token = None,
    coordinator_ca: CoordinatorCa = None,
    idempotency_key: Annotated[str | None, typer.Option(help="makes a retried transfer the same one")] = None,
) -> None:
    """Move money between two banks in one global transaction; print the outcome."""
    from adapters.postgres.bank import transfer as run_transfer
    from participant_sdk import CoordinatorClient, Transaction

    async def go() -> Transaction:
        async with CoordinatorClient(
            coordinator or [DEFAULT_COORDINATOR], token=token, ca_file=coordinator_ca
        ) as client:
            return await run_transfer(
                client, _side(source, "--from"), _side(target, "--to"), amount, idempotency_key=idempotency_key
            )

    answer = asyncio.run(go())
    typer.echo(json.dumps({"gtid": answer.gtid, "outcome": answer.outcome, "reason": answer.reason}))
    if answer.outcome != "committed":
        raise typer.Exit(1)


def _side(text: str, option: str) -> tuple[str, str]:
    bank, sep, account = text.partition(":")
    if not sep or not bank or not account:
        raise typer.BadParameter(f"expected BANK:ACCOUNT, not {text!r}", param_hint=option)
    return bank, account
