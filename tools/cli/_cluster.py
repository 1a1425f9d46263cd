"""``twopc cluster status``: the coordinator replicas, their epochs, leases and takeovers."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.table import Table

from tools.cli._options import CoordinatorCa, OptionalCoordinatorUrls, Token
from tools.cli._txn import _ask, _console

__all__ = ["app", "status"]

app = typer.Typer(help="The coordinator replicas.", no_args_is_help=True)


@app.command("status")
def status(
    coordinator: OptionalCoordinatorUrls = None,
    token: Token = None,
    coordinator_ca: CoordinatorCa = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Every replica the shared log knows: epoch, lease, whether it is alive, who took it over."""
    view = _ask(coordinator, token, coordinator_ca, lambda client: client.cluster())
    if as_json:
        typer.echo(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
        return
    log = "a shared log" if view["shared_log"] else "a log of its own (one replica)"
    table = Table(title=f"twopc cluster, as {view['node_id']} sees it ({log})")
    for column in ("replica", "epoch", "url", "lease", "taken over by"):
        table.add_column(column, no_wrap=True)
    for replica in view["replicas"]:
        alive = "[green]alive[/]" if replica["alive"] else "[red]expired[/]"
        until = (replica["lease_expires_at"] or "")[:23].replace("T", " ")
        taken = replica["taken_over_by"] or ""
        if taken and replica["taken_over_at"]:
            taken += f" at {replica['taken_over_at'][:19].replace('T', ' ')}"
        name = replica["node_id"] + (" (this)" if replica["this"] else "")
        table.add_row(name, str(replica["epoch"]), replica["advertise_url"], f"{alive} {until}".strip(), taken)
    _console().print(table)
    if not view["ready"]:
        typer.echo(f"{view['node_id']} is not ready: it holds no live lease on the log", err=True)
