"""``twopc pg recover``: settle a PostgreSQL participant's orphaned prepared
transactions by asking the coordinator, even when the participant service is gone."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

from tools.cli._options import CoordinatorUrls, Token

__all__ = ["app", "recover"]

app = typer.Typer(help="PostgreSQL participants: tools for operators.", no_args_is_help=True)


@app.command("recover")
def recover(
    dsn: Annotated[str, typer.Option(help="the participant's database", envvar="TWOPC_PG_DSN")],
    coordinator: CoordinatorUrls,
    token: Token = None,
    participant: Annotated[
        str | None, typer.Option(help="the participant's name (its gid prefix is twopc:NAME:)")
    ] = None,
    gid_prefix: Annotated[str | None, typer.Option(help="the participant's gid prefix, if not the default")] = None,
    min_age: Annotated[float, typer.Option(help="only transactions prepared at least this many seconds ago")] = 0.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="say what would be done, do nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per transaction")] = False,
) -> None:
    """Commit or roll back this participant's prepared transactions (its gid prefix, this
    database only) as the coordinator decided; leave undecided ones alone."""
    from adapters.postgres import GidScheme, resolve_orphans

    if (participant is None) == (gid_prefix is None):
        raise typer.BadParameter("give exactly one of --participant and --gid-prefix")
    try:
        gids = GidScheme(gid_prefix) if gid_prefix else GidScheme.for_participant(participant or "")
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        results = asyncio.run(resolve_orphans(dsn, coordinator, gids, min_age=min_age, dry_run=dry_run, token=token))
    except OSError as exc:
        typer.echo(f"twopc pg recover: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # psycopg's connection errors, named for the operator
        typer.echo(f"twopc pg recover: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    for r in results:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "gid": r.gid,
                        "gtid": r.gtid,
                        "branch": r.branch,
                        "age_seconds": r.age_seconds,
                        "action": r.action,
                        "detail": r.detail,
                    }
                )
            )
        else:
            typer.echo(f"{r.action:<24} {r.gid}  (prepared {r.age_seconds:.0f}s ago; {r.detail})")
    counts: dict[str, int] = {}
    for r in results:
        counts[r.action] = counts.get(r.action, 0) + 1
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items())) or "nothing to do"
    typer.echo(f"{len(results)} prepared transaction(s) of {gids.prefix!r}: {summary}", err=True)
    if counts.get("failed") or counts.get("coordinator_unreachable"):
        raise typer.Exit(1)
