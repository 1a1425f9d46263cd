"""README.md's quickstart works as printed: `twopc demo`, then its curl examples."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from compose.supervisor import Node, twopc_command

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def free_ports_in_a_row(count: int) -> int:
    """A port P such that P ... P+count-1 are free on loopback (the demo's layout)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count - 1 > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL)


def localize(block: str, port: int, directory: Path) -> str:
    """Point the README's commands at this test's demo (its ports, its directory of
    tokens) and this interpreter's twopc."""
    for readme_port, offset in (("7070", 0), ("7071", 1), ("7072", 2)):
        block = block.replace(f"127.0.0.1:{readme_port}", f"127.0.0.1:{port + offset}")
    block = block.replace("var/demo/", f"{directory}/")
    twopc = " ".join(twopc_command())
    return block.replace(".venv/bin/twopc txn", f"TWOPC_COORDINATOR=http://127.0.0.1:{port} {twopc} txn")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[int]:
    port = free_ports_in_a_row(3)
    node = Node(
        "demo",
        twopc_command("demo", "--port", str(port), "--dir", str(tmp_path / "demo")),
        ready_url=f"http://127.0.0.1:{port}/readyz",
        log_path=tmp_path / "demo.log",
    )
    node.start()
    try:
        node.wait_ready(timeout=60)
        # The demo reports ready once all three are; the queues must answer too.
        Node("a", [], f"http://127.0.0.1:{port + 1}/healthz", tmp_path / "a").wait_ready()
        Node("b", [], f"http://127.0.0.1:{port + 2}/healthz", tmp_path / "b").wait_ready()
        yield port
    finally:
        node.stop()
        assert "Traceback" not in node.log_text()


def run(script: str) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_names_the_two_setup_commands() -> None:
    setup = shell_blocks()[0]
    assert "make run" in setup and "make test" in setup
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_the_quickstart_commits_one_item_on_each_queue_exactly_once(demo: int, tmp_path: Path) -> None:
    quickstart = localize(shell_blocks()[1], demo, tmp_path / "demo")
    token, execute, list_a, list_b = (line for line in _commands(quickstart))
    answer = json.loads(run(f"{token}\n{execute}"))
    assert answer["outcome"] == "committed"
    again = json.loads(run(f"{token}\n{execute}"))  # the same Idempotency-Key: the same transaction
    assert again["gtid"] == answer["gtid"]
    items_a = json.loads(run(list_a))["items"]
    items_b = json.loads(run(list_b))["items"]
    assert [(i["gtid"], i["value"]) for i in items_a] == [(answer["gtid"], "hello")]
    assert [(i["gtid"], i["value"]) for i in items_b] == [(answer["gtid"], "world")]


def test_the_quickstart_refuses_a_call_without_its_token(demo: int, tmp_path: Path) -> None:
    _, execute, _, _ = _commands(localize(shell_blocks()[1], demo, tmp_path / "demo"))
    answer = json.loads(run(f"TWOPC_TOKEN=not-the-token\n{execute}"))
    assert answer["error"]["code"] == "invalid_token"


def test_the_step_by_step_example_commits_and_shows_the_transaction(demo: int, tmp_path: Path) -> None:
    out = run(localize(shell_blocks()[2], demo, tmp_path / "demo"))
    assert '"outcome":"committed"' in out
    gtid = re.search(r'"gtid":"([^"]+)"', out)
    assert gtid is not None
    assert gtid.group(1)[:20] in out.split('"outcome":"committed"', 1)[1]  # txn show / list print it
    items_a = json.loads(run(f"curl -s http://127.0.0.1:{demo + 1}/queue/items"))["items"]
    assert [i["value"] for i in items_a] == [1, 2]


def _commands(block: str) -> list[str]:
    """Shell commands of a block, joining backslash-continued lines."""
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]


def test_the_metrics_examples_answer_from_the_coordinator_and_a_queue(demo: int, tmp_path: Path) -> None:
    (block,) = [b for b in shell_blocks() if "/metrics" in b]
    coordinator, queue = _commands(localize(block, demo, tmp_path / "demo"))
    assert 'twopc_transactions_total{outcome="committed"}' in run(coordinator)
    assert "twopc_branch_votes_total" in run(queue)
