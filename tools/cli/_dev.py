"""``twopc dev up|down|status``: local PostgreSQL and Kafka for development and tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from compose.dev import SERVICES, DevService, default_state_dir, service, write_service

__all__ = ["app", "down", "restart", "status", "up"]

app = typer.Typer(help="Local services for development and tests.", no_args_is_help=True)

Services = Annotated[list[str] | None, typer.Argument(help=f"any of: {', '.join(SERVICES)} (default: all)")]
StateDir = Annotated[Path | None, typer.Option("--dir", help="where the services keep data (default var/dev)")]


def _modules(names: list[str] | None) -> list[tuple[str, DevService]]:
    chosen = names or list(SERVICES)
    unknown = [n for n in chosen if n not in SERVICES]
    if unknown:
        raise typer.BadParameter(f"unknown service {unknown[0]!r}; choose from {', '.join(SERVICES)}")
    return [(n, service(n)) for n in chosen]


@app.command("up")
def up(services: Services = None, state_dir: StateDir = None) -> None:
    """Start the services (or reuse running ones), wait until they answer, print how to reach them."""
    where = state_dir or default_state_dir()
    for name, module in _modules(services):
        typer.echo(f"{name}: starting or reusing ...", err=True)
        try:
            info = module.up(where)
        except RuntimeError as exc:
            typer.echo(f"{name}: {exc}", err=True)
            raise typer.Exit(1) from None
        write_service(where, name, info)
        typer.echo(f"{name}: {json.dumps(info)}")


@app.command("down")
def down(services: Services = None, state_dir: StateDir = None) -> None:
    """Stop the services that `twopc dev up` started."""
    where = state_dir or default_state_dir()
    for name, module in _modules(services):
        module.down(where)
        write_service(where, name, None)
        typer.echo(f"{name}: stopped", err=True)


@app.command("restart")
def restart(
    services: Services = None,
    state_dir: StateDir = None,
    downtime: Annotated[float, typer.Option(min=0, help="seconds to stay down")] = 0.0,
) -> None:
    """Stop and start the services again on the same address and data."""
    where = state_dir or default_state_dir()
    for name, module in _modules(services):
        try:
            info = module.restart(where, downtime)
        except RuntimeError as exc:
            typer.echo(f"{name}: {exc}", err=True)
            raise typer.Exit(1) from None
        write_service(where, name, info)
        typer.echo(f"{name}: {json.dumps(info)}")


@app.command("status")
def status(services: Services = None, state_dir: StateDir = None) -> None:
    """Say which services are running and how to reach them."""
    where = state_dir or default_state_dir()
    for name, module in _modules(services):
        info = module.status(where)
        typer.echo(f"{name}: {json.dumps(info) if info else 'not running'}")
