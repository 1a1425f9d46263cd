"""README.md's replicas walkthrough works as printed: `twopc demo --replicas 2`, a commit
through c1 read back through c2, c1 killed, and c2 going on."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from adapters.postgres.testing import scratch_database, server_dsn
from compose.supervisor import Node, twopc_command
from tests.e2e.test_quickstart import _commands, free_ports_in_a_row, run, shell_blocks
from twopc_core.testing import wait_until

pytestmark = pytest.mark.slow


def walkthrough() -> list[str]:
    (block,) = [b for b in shell_blocks() if "pkill" in b and "cluster status" in b]
    return _commands(block)


def localize(command: str, port: int, directory: Path) -> str:
    """Point a README command at this test's demo, its directory and this interpreter's twopc."""
    for offset in range(4):
        command = command.replace(f"127.0.0.1:{7070 + offset}", f"127.0.0.1:{port + offset}")
    command = command.replace("var/demo/", f"{directory}/")
    return command.replace(".venv/bin/twopc", " ".join(twopc_command()))


@pytest.fixture
async def log_dsn() -> AsyncIterator[str]:
    """A log of this test's own: the README's Idempotency-Key must not find an earlier run's."""
    async with scratch_database(server_dsn(), "demo") as dsn:
        yield dsn


@pytest.fixture
def demo(tmp_path: Path, log_dsn: str) -> Iterator[tuple[int, Node]]:
    port = free_ports_in_a_row(4)
    argv = twopc_command(
        "demo", "--replicas", "2", "--port", str(port), "--dir", str(tmp_path / "demo"), "--log-dsn", log_dsn
    )
    node = Node("demo", argv, ready_url=f"http://127.0.0.1:{port}/readyz", log_path=tmp_path / "demo.log")
    node.start()
    try:
        node.wait_ready(timeout=60)
        for offset, path in ((1, "readyz"), (2, "healthz"), (3, "healthz")):
            Node("n", [], f"http://127.0.0.1:{port + offset}/{path}", tmp_path / "n").wait_ready()
        yield port, node
    finally:
        node.stop()


async def test_the_replicas_walkthrough_reads_through_c2_survives_killing_c1_and_commits_through_c2(
    demo: tuple[int, Node], tmp_path: Path
) -> None:
    port, node = demo
    directory = tmp_path / "demo"
    auth, execute, read_back, kill, pause, status, execute_at_c2, items = (
        localize(command, port, directory) for command in walkthrough()
    )
    assert pause.startswith("sleep")  # for a person; the test waits on the takeover instead

    gtid = run(f'{auth}\n{execute}\necho "$GTID"').strip()
    seen_by_c2 = json.loads(run(f"{auth}\n{read_back.replace('$GTID', gtid)}"))
    run(kill)
    reader = f"Authorization: Bearer {(directory / 'reader.token').read_text().strip()}"

    def c1_taken_over() -> bool:
        cluster = json.loads(run(f"curl -s http://127.0.0.1:{port + 1}/v1/cluster -H '{reader}'"))
        return any(r["node_id"] == "c1" and r["taken_over_by"] == "c2" for r in cluster["replicas"])

    await wait_until(c1_taken_over, timeout=15, interval=0.2, message="c2 to take c1 over")
    table = run(status)
    after = json.loads(run(f"{auth}\n{execute_at_c2}"))
    values = [item["value"] for item in json.loads(run(items))["items"]]

    assert re.fullmatch(r"c1-[0-9a-f]+", gtid), gtid
    assert (seen_by_c2["gtid"], seen_by_c2["outcome"]) == (gtid, "committed")
    assert re.search(r"c1\s.*\bc2\b", table), table  # c1's row names c2 as its taker
    assert after["outcome"] == "committed" and after["gtid"].startswith("c2-"), after
    assert values == ["one", "three"]
    assert "c1 exited" in node.log_text() and "the other replicas go on" in node.log_text()
    assert "Traceback" not in node.log_text()
