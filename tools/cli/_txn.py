"""``twopc txn list`` and ``twopc txn show``: what the coordinator knows, for people."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from tools.cli._options import DEFAULT_COORDINATOR, CoordinatorCa, OptionalCoordinatorUrls, Token

if TYPE_CHECKING:
    from pydantic import BaseModel

    from participant_sdk.client import CoordinatorClient

__all__ = ["abandon", "app", "audit", "list_transactions", "show"]

app = typer.Typer(help="Inspect transactions.", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

_STATE_STYLE = {
    "committed": "green",
    "aborted": "red",
    "committing": "yellow",
    "aborting": "yellow",
    "preparing": "cyan",
    "active": "cyan",
}


def _ask(
    coordinator: list[str] | None,
    token: str | None,
    ca_file: Path | None,
    call: Callable[[CoordinatorClient], Awaitable[BaseModel]],
) -> Any:
    """``call`` with a client of the coordinator (the local one unless told), its
    failures said for people; the answer as JSON (what ``--json`` prints)."""
    from participant_sdk.client import CoordinatorClient

    async def run() -> dict[str, Any]:
        async with CoordinatorClient(coordinator or [DEFAULT_COORDINATOR], token=token, ca_file=ca_file) as client:
            return (await call(client)).model_dump(mode="json")

    return _call(run)


def _call(coro_fn: Any) -> Any:
    import aiohttp

    from participant_sdk.client import CoordinatorError, describe_failure

    try:
        return asyncio.run(coro_fn())
    except CoordinatorError as exc:
        typer.echo(f"twopc: {exc.message} ({exc.status} {exc.code})", err=True)
        _echo_replicas(exc)
        raise typer.Exit(1) from None
    except (aiohttp.ClientError, OSError) as exc:
        typer.echo(f"twopc: cannot reach the coordinator: {describe_failure(exc)}", err=True)
        raise typer.Exit(1) from None


def _echo_replicas(error: BaseException) -> None:
    """What each coordinator replica answered, when several were asked."""
    for note in getattr(error, "__notes__", ()):
        typer.echo(f"  {note}", err=True)


def _console() -> Console:
    # Piped output gets room for whole gtids instead of the 80 columns rich assumes.
    return Console() if sys.stdout.isatty() else Console(width=160)


@app.command("list")
def list_transactions(
    coordinator: OptionalCoordinatorUrls = None,
    token: Token = None,
    coordinator_ca: CoordinatorCa = None,
    state: Annotated[str | None, typer.Option(help="only transactions in this state")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option(help="continue after this gtid")] = None,
    heuristic: Annotated[
        bool, typer.Option("--heuristic", help="only those with a branch forced against the decision")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """List transactions, oldest first."""
    page = _ask(
        coordinator,
        token,
        coordinator_ca,
        lambda client: client.list(state=state, limit=limit, cursor=cursor, heuristic=True if heuristic else None),
    )
    if as_json:
        typer.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(title="transactions")
    table.add_column("gtid", no_wrap=True, min_width=31)
    for column in ("state", "outcome", "branches", "created"):
        table.add_column(column)
    for tx in page["transactions"]:
        branches = ", ".join(f"{b['name']}:{b['state']}{_marks(b)}" for b in tx["branches"])
        style = _STATE_STYLE.get(tx["state"], "")
        table.add_row(
            tx["gtid"],
            f"[{style}]{tx['state']}[/]",
            (tx["outcome"] or "-") + (" [red](heuristic: mixed)[/]" if tx.get("heuristic") else ""),
            branches,
            tx["created_at"][:19].replace("T", " "),
        )
    console = _console()
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"more: --cursor {page['next_cursor']}")


@app.command("show")
def show(
    gtid: Annotated[str, typer.Argument(help="the transaction's gtid")],
    coordinator: OptionalCoordinatorUrls = None,
    token: Token = None,
    coordinator_ca: CoordinatorCa = None,
    as_json: AsJson = False,
) -> None:
    """Show one transaction and its branches (* = phase 2 still pending)."""
    tx = _ask(coordinator, token, coordinator_ca, lambda client: client.get(gtid))
    if as_json:
        typer.echo(orjson.dumps(tx, option=orjson.OPT_INDENT_2).decode())
        return
    console = _console()
    style = _STATE_STYLE.get(tx["state"], "")
    console.print(f"[bold]{tx['gtid']}[/]  [{style}]{tx['state']}[/]  outcome: {tx['outcome'] or 'undecided'}")
    if tx.get("heuristic"):
        console.print("  [red]heuristic: mixed[/] (a branch was forced against the decision)")
    for key in ("begun_by", "reason", "created_at", "updated_at", "deadline"):
        if tx.get(key):
            console.print(f"  {key}: {tx[key]}")
    if tx.get("metadata"):
        console.print(f"  metadata: {orjson.dumps(tx['metadata']).decode()}")
    table = Table("branch", "state", "early", "pending", "heuristic", "resolved", "reason")
    for b in tx["branches"]:
        resolved = f"by {b['resolved_by']} at {b['resolved_at'][:19]}" if b.get("resolved_by") else ""
        table.add_row(
            b["name"],
            b["state"],
            "yes" if b["early"] else "",
            "yes" if b["pending"] else "",
            b.get("heuristic") or "",
            resolved,
            b["reason"] or "",
        )
    console.print(table)


@app.command("abandon")
def abandon(
    gtid: Annotated[str, typer.Argument(help="the transaction's gtid")],
    participant: Annotated[str, typer.Option(help="the participant gone for good")],
    reason: Annotated[str, typer.Option(help="why, for the audit")],
    coordinator: OptionalCoordinatorUrls = None,
    token: Token = None,
    coordinator_ca: CoordinatorCa = None,
) -> None:
    """Operator: stop phase 2 to a participant that is gone for good (the decision stands)."""
    tx = _ask(coordinator, token, coordinator_ca, lambda client: client.abandon(gtid, participant, reason))
    states = ", ".join(f"{b['name']}:{b['state']}" for b in tx["branches"])
    typer.echo(f"{tx['gtid']} {tx['state']} ({states})")


@app.command("audit")
def audit(
    coordinator: OptionalCoordinatorUrls = None,
    token: Token = None,
    coordinator_ca: CoordinatorCa = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option(help="continue after this act")] = None,
    as_json: AsJson = False,
) -> None:
    """Operators' acts (who, when, what, why), newest first."""
    page = _ask(coordinator, token, coordinator_ca, lambda client: client.audit(limit=limit, cursor=cursor))
    if as_json:
        typer.echo(orjson.dumps(page, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table("at", "by", "act", "gtid", "participant", "reason", title="operators' acts")
    for act in page["acts"]:
        table.add_row(
            act["at"][:19].replace("T", " "),
            act["actor"],
            act["action"],
            act["gtid"] or "",
            act["participant"] or "",
            act["reason"],
        )
    console = _console()
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"more: --cursor {page['next_cursor']}")


def _marks(branch: dict[str, Any]) -> str:
    """* phase 2 pending; ! forced against the decision."""
    return ("*" if branch["pending"] else "") + ("!" if branch.get("heuristic") else "")
