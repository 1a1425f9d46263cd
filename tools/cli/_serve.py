"""``twopc serve``: run the coordinator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from twopc_core import telemetry

if TYPE_CHECKING:
    from coordinator.config import Settings

__all__ = ["serve"]


def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML file; TWOPC_* variables override it")
    ] = None,
) -> None:
    """Run the coordinator: REST API, decision log, recovery."""
    from coordinator.api import build_app
    from coordinator.config import load
    from coordinator.log import LogUnavailable, NodeIdInUse
    from twopc_core.runtime import run_service

    try:
        settings = load(config)
    except FileNotFoundError as exc:
        raise typer.BadParameter(str(exc), param_hint="--config") from None
    except ValidationError as exc:
        typer.echo(f"twopc: invalid configuration:\n{exc}", err=True)
        raise typer.Exit(2) from None
    telemetry.setup("twopc-coordinator", settings.log_level, settings.log_format)
    names = ", ".join(p.name for p in settings.participants) or "none"
    scheme = "https" if settings.server.tls else "http"
    typer.echo(
        f"twopc coordinator {settings.node_id} on {scheme}://{settings.server.host}:{settings.server.port}"
        f" (log: {settings.log.store} {_where(settings)}; participants: {names})",
        err=True,
    )
    if not settings.auth.enabled:
        typer.echo(
            "twopc: WARNING: auth.enabled is false: anyone who reaches this port may begin, commit, abort and read"
            " every transaction; keep it to a loopback-only setup",
            err=True,
        )
    elif not settings.auth.tokens:
        typer.echo(
            "twopc: WARNING: no [[auth.tokens]] are configured: every client call will be refused"
            " (make one with `twopc token new --name NAME --role client`)",
            err=True,
        )
    if settings.transactions.unsafe_lazy_decision:
        typer.echo(
            "twopc: WARNING: transactions.unsafe_lazy_decision is on: this coordinator is broken on purpose", err=True
        )
    if settings.log.unsafe_unfenced_decisions:
        typer.echo(
            "twopc: WARNING: log.unsafe_unfenced_decisions is on: this coordinator is broken on purpose", err=True
        )
    try:
        run_service(
            build_app(settings),
            settings.server.host,
            settings.server.port,
            ssl_context=settings.server.ssl_context(),
            limits=settings.server.limits(),
        )
    except (LogUnavailable, NodeIdInUse) as exc:
        typer.echo(f"twopc: the coordinator cannot start: {exc}", err=True)
        raise typer.Exit(2) from None


def _where(settings: Settings) -> str:
    """Where the log is, without a password."""
    if settings.log.store == "sqlite":
        return str(settings.log.path)
    dsn = settings.log.dsn or ""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", dsn)
