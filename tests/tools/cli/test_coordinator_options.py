"""``--coordinator`` on the command line: repeated, or a comma-separated list, for every
coordinator replica; a value that is not a URL is refused, named; the commands that ask
the coordinator go on to the next replica."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import adapters.kafka.events
import adapters.mockqueue.service
import adapters.postgres.bank
from participant_sdk import Outcome, Transaction
from participant_sdk.testing import StubCoordinator
from tools.cli._app import app
from twopc_core import telemetry

A, B, C = "http://127.0.0.1:7070", "http://10.0.0.2:7070", "https://c.example/twopc"

#: Each participant service's serve command without --coordinator, and the module of its run.
SERVE = {
    "mockqueue": (
        ["mockqueue", "serve", "--name", "q", "--port", "1", "--data", "d", "--secret", "s"],
        adapters.mockqueue.service,
    ),
    "bank": (
        ["bank", "serve", "--name", "b", "--port", "1", "--dsn", "postgresql://x/y", "--secret", "s"],
        adapters.postgres.bank,
    ),
    "events": (
        ["events", "serve", "--name", "e", "--port", "1", "--bootstrap", "k:9092", "--secret", "s"],
        adapters.kafka.events,
    ),
}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each service's ``run`` was called with (instead of serving)."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(telemetry, "setup", lambda *args, **kwargs: None)
    for _, module in SERVE.values():
        monkeypatch.setattr(module, "run", lambda **kwargs: calls.append(kwargs))
    return calls


@pytest.fixture
def refusing() -> Iterator[str]:
    """A URL whose port refuses connections (bound, not listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def stub_in_thread() -> Iterator[tuple[StubCoordinator, str]]:
    """A stub coordinator served by an event loop of its own, for commands that run theirs."""
    stub = StubCoordinator()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    serving = stub.serve()
    try:
        url = asyncio.run_coroutine_threadsafe(serving.__aenter__(), loop).result(10)
        yield stub, url
        asyncio.run_coroutine_threadsafe(serving.__aexit__(None, None, None), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("kind", list(SERVE))
@pytest.mark.parametrize(
    "given", [["--coordinator", A, "--coordinator", B], ["--coordinator", f"{A},{B}/"]], ids=["repeated", "commas"]
)
def test_a_service_is_given_every_coordinator_replica(
    served: list[dict[str, Any]], kind: str, given: list[str]
) -> None:
    result = CliRunner().invoke(app, [*SERVE[kind][0], *given])

    assert result.exit_code == 0, result.output
    assert [call["coordinator_url"] for call in served] == [[A, B]]


def test_repeated_and_comma_separated_urls_combine_in_order_each_once(served: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(
        app, [*SERVE["mockqueue"][0], "--coordinator", f"{B}, {A}", "--coordinator", f"{C},{B}"]
    )

    assert result.exit_code == 0, result.output
    assert served[0]["coordinator_url"] == [B, A, C]


@pytest.mark.parametrize("kind", list(SERVE))
def test_a_service_refuses_a_coordinator_that_is_not_a_url_naming_it(served: list[dict[str, Any]], kind: str) -> None:
    result = CliRunner().invoke(app, [*SERVE[kind][0], "--coordinator", f"{A},localhost:7070"])

    assert result.exit_code == 2
    assert "'localhost:7070'" in result.stderr
    assert served == []


@pytest.mark.parametrize("kind", list(SERVE))
def test_a_service_takes_its_coordinators_from_twopc_coordinator(
    served: list[dict[str, Any]], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWOPC_COORDINATOR", f"{A},{B}")
    result = CliRunner().invoke(app, SERVE[kind][0])

    assert result.exit_code == 0, result.output
    assert [call["coordinator_url"] for call in served] == [[A, B]]


def test_the_coordinator_option_wins_over_twopc_coordinator(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWOPC_COORDINATOR", A)
    result = CliRunner().invoke(app, [*SERVE["mockqueue"][0], "--coordinator", C])

    assert result.exit_code == 0, result.output
    assert served[0]["coordinator_url"] == [C]


def test_a_service_without_a_coordinator_is_refused(
    served: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TWOPC_COORDINATOR", raising=False)
    result = CliRunner().invoke(app, SERVE["mockqueue"][0])

    assert result.exit_code == 2
    assert "--coordinator" in result.stderr
    assert served == []


def test_txn_show_asks_the_next_replica_when_the_first_is_down(
    refusing: str, stub_in_thread: tuple[StubCoordinator, str]
) -> None:
    stub, url = stub_in_thread
    stub.decide("c1-g1", "committed")
    result = CliRunner().invoke(
        app, ["txn", "show", "c1-g1", "--coordinator", refusing, "--coordinator", url, "--json"]
    )

    assert result.exit_code == 0, result.stderr
    assert orjson.loads(result.stdout)["outcome"] == "committed"
    assert stub.inquiries == ["c1-g1"]


def test_txn_says_what_each_replica_answered_when_none_does(refusing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        second = f"http://127.0.0.1:{other.getsockname()[1]}"
        monkeypatch.setenv("TWOPC_COORDINATOR", f"{refusing},{second}")
        result = CliRunner().invoke(app, ["txn", "list"])

    assert result.exit_code == 1
    assert "cannot reach the coordinator" in result.stderr
    assert refusing in result.stderr and second in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("given", "urls"),
    [([], ("http://127.0.0.1:7070",)), (["--coordinator", f"{A},{B}"], (A, B))],
    ids=["default", "replicas"],
)
def test_bank_transfer_goes_through_the_coordinators_given(
    monkeypatch: pytest.MonkeyPatch, given: list[str], urls: tuple[str, ...]
) -> None:
    seen: list[tuple[str, ...]] = []

    async def transfer(client: Any, *args: Any, **kwargs: Any) -> Transaction:
        seen.append(client.urls)
        return Transaction(gtid="c1-g1", state="committed", outcome=Outcome.COMMITTED)

    monkeypatch.delenv("TWOPC_COORDINATOR", raising=False)
    monkeypatch.setattr(adapters.postgres.bank, "transfer", transfer)
    result = CliRunner().invoke(app, ["bank", "transfer", "--from", "a:x", "--to", "b:y", "--amount", "1", *given])

    assert result.exit_code == 0, result.output
    assert seen == [urls]
