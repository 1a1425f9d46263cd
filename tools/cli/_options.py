"""Command-line options every participant service shares (``twopc KIND serve``), and the
coordinator's URLs that every command talking to the coordinator takes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "DEFAULT_COORDINATOR",
    "CoordinatorUrls",
    "DataDir",
    "Host",
    "InquiryInterval",
    "Name",
    "OptionalCoordinatorUrls",
    "Port",
    "Secret",
    "Token",
    "coordinator_urls",
]

#: Where a command looks for the coordinator when not told.
DEFAULT_COORDINATOR = "http://127.0.0.1:7070"

_COORDINATOR_HELP = "a coordinator's base URL; repeat the option, or separate URLs with commas, for every replica"


def coordinator_urls(values: list[str] | None) -> list[str]:
    """The ``--coordinator`` values as base URLs: each value may list several,
    comma-separated; a value that is not an http(s) URL is refused, named."""
    from participant_sdk.client import parse_coordinator_urls

    try:
        return list(parse_coordinator_urls(values or []))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _urls_or_default(values: list[str] | None) -> list[str]:
    return coordinator_urls(values) if values else [DEFAULT_COORDINATOR]


Name = Annotated[str, typer.Option(help="the participant's name, as registered with the coordinator")]
Port = Annotated[int, typer.Option(help="port to listen on")]
#: Required: a participant service must know where its coordinator is.
CoordinatorUrls = Annotated[list[str], typer.Option("--coordinator", help=_COORDINATOR_HELP, callback=coordinator_urls)]
#: For commands that talk to a coordinator: the local one unless told (or TWOPC_COORDINATOR).
OptionalCoordinatorUrls = Annotated[
    list[str] | None,
    typer.Option(
        "--coordinator",
        envvar="TWOPC_COORDINATOR",
        help=f"{_COORDINATOR_HELP} [default: {DEFAULT_COORDINATOR}]",
        callback=_urls_or_default,
    ),
]
Secret = Annotated[str, typer.Option(help="shared secret the coordinator signs with", envvar="TWOPC_SECRET")]
DataDir = Annotated[Path | None, typer.Option("--data", help="directory for the participant log (default var/NAME)")]
Host = Annotated[str, typer.Option(help="address to listen on")]
InquiryInterval = Annotated[float, typer.Option(help="seconds a prepared branch waits before asking the coordinator")]
#: For commands that call the coordinator's REST API: the bearer token to call with.
Token = Annotated[
    str | None,
    typer.Option(
        envvar="TWOPC_TOKEN",
        help="a bearer token the coordinator accepts (`twopc token new` makes one)",
        show_default=False,
    ),
]
