"""The ``twopc`` command, assembled from its groups of subcommands."""

from __future__ import annotations

import typer

from tools.cli import (
    _bank,
    _bench,
    _chaos,
    _cluster,
    _demo,
    _dev,
    _events,
    _fuzz,
    _kafka,
    _mockqueue,
    _participant,
    _pg,
    _pipeline,
    _serve,
    _token,
    _txn,
)

__all__ = ["app"]

app = typer.Typer(
    help="twopc: a two-phase-commit coordinator, participant SDK and adapters.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(_serve.serve)
app.command("demo")(_demo.demo)
app.command("bench")(_bench.bench)
app.command("fuzz-api")(_fuzz.fuzz_api)
app.add_typer(_mockqueue.app, name="mockqueue")
app.add_typer(_events.app, name="events")
app.add_typer(_pipeline.app, name="pipeline")
app.add_typer(_kafka.app, name="kafka")
app.add_typer(_txn.app, name="txn")
app.add_typer(_chaos.app, name="chaos")
app.add_typer(_dev.app, name="dev")
app.add_typer(_pg.app, name="pg")
app.add_typer(_bank.app, name="bank")
app.add_typer(_cluster.app, name="cluster")
app.add_typer(_token.app, name="token")
app.add_typer(_participant.app, name="participant")
