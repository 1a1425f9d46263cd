"""``twopc token new``: a bearer token for the coordinator's REST API, and the lines
of configuration that let the coordinator accept it (which keep only its hash)."""

from __future__ import annotations

import json
import shlex
from enum import StrEnum
from typing import Annotated

import typer

__all__ = ["app", "new"]

app = typer.Typer(help="Bearer tokens for the coordinator's REST API.", no_args_is_help=True)


class _Role(StrEnum):
    client = "client"
    reader = "reader"
    operator = "operator"


@app.command("new")
def new(
    name: Annotated[str, typer.Option(help="who will hold it (a service, a person); recorded with what it does")],
    role: Annotated[
        list[_Role],
        typer.Option(
            help="client: begin and drive its own transactions; reader: read all; operator: also resolve. Repeatable"
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print {name, token, sha256, roles} as JSON")] = False,
    as_env: Annotated[
        bool,
        typer.Option(
            "--env",
            help="print shell lines setting TWOPC_TOKEN (for the client) and TWOPC_AUTH__TOKENS (for a coordinator"
            ' started from this shell): eval "$(twopc token new ... --env)"',
        ),
    ] = False,
) -> None:
    """Make a token: print it once, with the [[auth.tokens]] entry for the coordinator."""
    from pydantic import ValidationError

    from coordinator.config import TokenSettings
    from twopc_core.tokens import new_token, token_hash

    token = new_token()
    roles = sorted({r.value for r in role})
    try:
        entry = TokenSettings(name=name, sha256=token_hash(token), roles=roles)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise typer.BadParameter(exc.errors()[0]["msg"], param_hint="--name") from None
    if as_json:
        typer.echo(json.dumps({"name": entry.name, "token": token, "sha256": entry.sha256, "roles": roles}))
        return
    if as_env:
        accepted = json.dumps([{"name": entry.name, "sha256": entry.sha256, "roles": roles}])
        typer.echo(f"export TWOPC_TOKEN={shlex.quote(token)}\nexport TWOPC_AUTH__TOKENS={shlex.quote(accepted)}")
        return
    typer.echo(f"# The token, shown only now: give it to {entry.name}, never put it in the configuration.")
    typer.echo(token)
    typer.echo("# For the coordinator's configuration (it keeps only the hash):")
    typer.echo(f'[[auth.tokens]]\nname = "{entry.name}"\nsha256 = "{entry.sha256}"\nroles = {json.dumps(roles)}')
