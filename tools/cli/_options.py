"""Command-line options every participant service shares (``twopc KIND serve``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["CoordinatorUrl", "DataDir", "Host", "InquiryInterval", "Name", "Port", "Secret"]

Name = Annotated[str, typer.Option(help="the participant's name, as registered with the coordinator")]
Port = Annotated[int, typer.Option(help="port to listen on")]
CoordinatorUrl = Annotated[str, typer.Option("--coordinator", help="the coordinator's base URL")]
Secret = Annotated[str, typer.Option(help="shared secret the coordinator signs with", envvar="TWOPC_SECRET")]
DataDir = Annotated[Path | None, typer.Option("--data", help="directory for the participant log (default var/NAME)")]
Host = Annotated[str, typer.Option(help="address to listen on")]
InquiryInterval = Annotated[float, typer.Option(help="seconds a prepared branch waits before asking the coordinator")]
