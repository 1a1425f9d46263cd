"""Command-line options every participant service shares (``twopc KIND serve``), and the
coordinator's URLs that every command talking to the coordinator takes.

The coordinator: every command that talks to one takes ``--coordinator URL`` (repeated,
or comma-separated, for replicas), and without it ``TWOPC_COORDINATOR`` (the same
format); the participant services require one of the two, the client commands
(``twopc txn ...``, ``twopc cluster status``, ...) fall back on :data:`DEFAULT_COORDINATOR`.

TLS, the same for every service: ``--tls-cert``/``--tls-key`` serve HTTPS (with
``--tls-client-ca``, clients such as the coordinator must present a certificate that CA
signed); ``--coordinator-ca`` trusts that CA for an https coordinator, and
``--coordinator-cert``/``--coordinator-key`` present a client certificate to it.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal

import typer

__all__ = [
    "DEFAULT_COORDINATOR",
    "CoordinatorCa",
    "CoordinatorCert",
    "CoordinatorKey",
    "CoordinatorUrls",
    "DataDir",
    "Host",
    "InquiryInterval",
    "LogFormat",
    "Metrics",
    "Name",
    "OptionalCoordinatorUrls",
    "Port",
    "Secret",
    "TlsCert",
    "TlsClientCa",
    "TlsKey",
    "Token",
    "client_tls",
    "coordinator_urls",
    "server_tls",
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
#: Required (the option or TWOPC_COORDINATOR): a participant service must know where its coordinator is.
CoordinatorUrls = Annotated[
    list[str],
    typer.Option("--coordinator", envvar="TWOPC_COORDINATOR", help=_COORDINATOR_HELP, callback=coordinator_urls),
]
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
#: The service log's lines: JSON, readable console lines, or auto (console on a terminal).
LogFormat = Annotated[
    Literal["auto", "json", "console"],
    typer.Option(
        envvar="TWOPC_LOG_FORMAT", help="log lines: json, console, or auto (console on a terminal, key=value elsewhere)"
    ),
]
#: For participant services: whether the latency histograms at /metrics are observed.
Metrics = Annotated[
    bool,
    typer.Option(
        "--metrics/--no-metrics",
        help="observe the latency histograms at /metrics (the counts and gauges are there either way)",
        envvar="TWOPC_METRICS",
    ),
]
#: For commands that call the coordinator's REST API: the bearer token to call with.
Token = Annotated[
    str | None,
    typer.Option(
        envvar="TWOPC_TOKEN",
        help="a bearer token the coordinator accepts (`twopc token new` makes one)",
        show_default=False,
    ),
]

TlsCert = Annotated[
    Path | None,
    typer.Option("--tls-cert", help="serve HTTPS with this certificate (PEM, with its chain); needs --tls-key"),
]
TlsKey = Annotated[Path | None, typer.Option("--tls-key", help="the key of --tls-cert (PEM)")]
TlsClientCa = Annotated[
    Path | None,
    typer.Option("--tls-client-ca", help="with TLS, require clients to present a certificate this CA (PEM) signed"),
]
CoordinatorCa = Annotated[
    Path | None,
    typer.Option(
        "--coordinator-ca",
        envvar="TWOPC_COORDINATOR_CA",
        help="trust only this CA (PEM) for an https coordinator [default: the system's CAs]",
    ),
]
CoordinatorCert = Annotated[
    Path | None,
    typer.Option("--coordinator-cert", help="a client certificate (PEM) to present to an https coordinator"),
]
CoordinatorKey = Annotated[Path | None, typer.Option("--coordinator-key", help="the key of --coordinator-cert (PEM)")]


def server_tls(cert: Path | None, key: Path | None, client_ca: Path | None = None) -> ssl.SSLContext | None:
    """The context of ``--tls-cert``/``--tls-key``/``--tls-client-ca``; None to serve plain HTTP."""
    from twopc_core.tls import TlsConfigError, server_context

    if cert is None and key is None:
        if client_ca is not None:
            raise typer.BadParameter("needs --tls-cert and --tls-key", param_hint="--tls-client-ca")
        return None
    if cert is None or key is None:
        raise typer.BadParameter("--tls-cert and --tls-key go together", param_hint="--tls-cert/--tls-key")
    try:
        return server_context(cert, key, client_ca)
    except TlsConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tls-cert/--tls-key/--tls-client-ca") from None


def client_tls(
    ca: Path | None, cert: Path | None, key: Path | None, *, options: str = "--coordinator-ca/-cert/-key"
) -> ssl.SSLContext | None:
    """The client context of a CA file and a client certificate; None for the defaults
    (the system's CAs, no certificate). ``options`` names them in an error."""
    from twopc_core.tls import TlsConfigError, client_context

    if ca is None and cert is None and key is None:
        return None
    try:
        return client_context(ca, cert, key)
    except TlsConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint=options) from None
