"""``twopc participant force``: an operator's heuristic outcome for a branch in doubt,
sent to the participant service itself (signed with its secret, as the coordinator's
calls are). The coordinator hears of it when it next sends the branch phase 2, and
records heuristic damage if the decision was otherwise."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated, Any

import typer

from tools.cli._options import Secret

__all__ = ["app", "force"]

app = typer.Typer(help="Participant services: tools for operators.", no_args_is_help=True)


class _Outcome(StrEnum):
    committed = "committed"
    aborted = "aborted"


@app.command("force")
def force(
    gtid: Annotated[str, typer.Argument(help="the transaction")],
    url: Annotated[str, typer.Option(help="where the participant protocol is mounted, e.g. http://HOST:PORT/twopc")],
    branch: Annotated[str, typer.Option(help="the branch: the participant's name, as the coordinator knows it")],
    outcome: Annotated[_Outcome, typer.Option(help="what to do with the work it holds prepared")],
    secret: Secret,
    reason: Annotated[str | None, typer.Option(help="why, for the participant's log")] = None,
) -> None:
    """Commit or abort a branch in doubt without the coordinator (a heuristic decision)."""
    import aiohttp
    import orjson

    from twopc_core.signing import signed_headers

    body = orjson.dumps({"gtid": gtid, "branch": branch, "outcome": outcome.value, "reason": reason})
    headers = {"Content-Type": "application/json", **signed_headers(secret, "force", body)}

    async def send() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url.rstrip('/')}/force", data=body, headers=headers) as response:
                return response.status, orjson.loads(await response.read() or b"null")

    try:
        status, answer = asyncio.run(send())
    except (aiohttp.ClientError, OSError, orjson.JSONDecodeError) as exc:
        typer.echo(f"twopc: the participant did not answer: {exc}", err=True)
        raise typer.Exit(1) from None
    if status != 200:
        error = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
        typer.echo(f"twopc: {error.get('message', answer)} ({status} {error.get('code', '')})", err=True)
        raise typer.Exit(1)
    typer.echo(f"{gtid} {branch}: {answer['status']} (heuristic)")
