"""docs/embedding.md works as printed: its files written out, its commands run in
order, with the inventory service killed after its vote and restarted."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from compose.supervisor import Node, free_port, twopc_command
from twopc_core.failpoints import CRASH_EXIT_CODE
from twopc_core.signing import signed_headers

pytestmark = pytest.mark.slow

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "embedding.md"
README = GUIDE.parents[1] / "README.md"
#: Voted yes, logged, answered: killed before the commit is applied at the resource.
AFTER_THE_VOTE = "participant.before_commit_applied"


def guide_files() -> dict[str, str]:
    """The blocks that are files (```lang file=NAME), by name."""
    return dict(re.findall(r"```\w+ file=(\S+)\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL))


def guide_commands() -> list[str]:
    (block,) = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    return [line.strip() for line in block.splitlines() if line.strip()]


class Guide:
    """The guide's directory and ports: what its text says, moved to this test's."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.coordinator_port, self.inventory_port = free_port(), free_port()
        self.env: dict[str, str] = {}
        self.services: list[Node] = []

    def localize(self, text: str) -> str:
        text = text.replace("127.0.0.1:7070", f"127.0.0.1:{self.coordinator_port}")
        text = text.replace("port = 7070", f"port = {self.coordinator_port}")
        text = text.replace("127.0.0.1:7080", f"127.0.0.1:{self.inventory_port}")
        return text.replace("INVENTORY_PORT=7080", f"INVENTORY_PORT={self.inventory_port}")

    def write_files(self) -> None:
        for name, text in guide_files().items():
            (self.directory / name).write_text(self.localize(text))

    def parse(self, line: str) -> tuple[dict[str, str], list[str]]:
        """A command line's leading assignments and its argv, on this test's ports,
        ``$VAR`` expanded from what was exported, ``python`` and ``twopc`` this test's."""
        words = [re.sub(r"\$(\w+)", lambda m: self.env[m.group(1)], word) for word in shlex.split(self.localize(line))]
        assignments: dict[str, str] = {}
        while "=" in words[0]:
            name, value = words.pop(0).split("=", 1)
            assignments[name] = value
        if words[0] == "python":
            words[0] = sys.executable
        elif words[0] == "twopc":
            words = twopc_command(*words[1:])
        return assignments, words

    def service(self, line: str) -> Node:
        """A ``... &`` line as a supervised process, ready once it answers."""
        assignments, argv = self.parse(line.removesuffix("&").strip())
        name, port, ready = (
            ("coordinator", self.coordinator_port, "readyz")
            if argv[0].endswith("twopc")
            else ("inventory", self.inventory_port, "healthz")
        )
        node = Node(
            name, argv, f"http://127.0.0.1:{port}/{ready}", self.directory / f"{name}.log", {**self.env, **assignments}
        )
        self.services.append(node)
        return node

    def start_run(self, line: str) -> subprocess.Popen[str]:
        assignments, argv = self.parse(line)
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self._environ(assignments)
        )

    def run(self, line: str) -> str:
        process = self.start_run(line)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        return out

    def _environ(self, assignments: dict[str, str]) -> dict[str, str]:
        import os

        return {**os.environ, **self.env, **assignments}


@pytest.fixture
def guide(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Guide]:
    monkeypatch.chdir(tmp_path)  # the guide's commands run in the directory of its files
    guide = Guide(tmp_path)
    guide.write_files()
    yield guide
    for node in reversed(guide.services):
        node.stop()
        assert "Traceback" not in node.log_text(), node.log_text()


def test_the_guide_runs_as_printed_through_a_kill_after_the_vote(guide: Guide) -> None:
    mkdir, export, serve, inventory_line, take_apples, take_pears, show_stock = guide_commands()
    subprocess.run(shlex.split(mkdir), check=True)
    name, value = export.removeprefix("export ").split("=", 1)
    guide.env[name] = guide.localize(value)

    coordinator = guide.service(serve)
    coordinator.start()
    coordinator.wait_ready(timeout=30)
    inventory = guide.service(inventory_line)
    inventory.start({"TWOPC_FAILPOINTS": f"{AFTER_THE_VOTE}=1*crash"})
    inventory.wait_ready(timeout=30)

    client = guide.start_run(take_apples)
    assert inventory.wait_exit(timeout=60) == CRASH_EXIT_CODE
    # The kill says which failpoint it was, in the service's log.
    assert any("failpoint fired" in line and AFTER_THE_VOTE in line for line in inventory.log_text().splitlines())
    inventory.start()  # the same data, no failpoint
    inventory.wait_ready(timeout=30)
    restarted = inventory.log_text().split("--- start 2 of inventory", 1)[1]
    assert "in_doubt_branches=1" in restarted  # its yes was logged before the kill
    out, err = client.communicate(timeout=90)

    assert client.returncode == 0, err
    assert out.splitlines()[-1].split()[1] == "committed"
    pears = guide.run(take_pears).split()
    assert pears[1] == "aborted"
    assert "not enough pear" in " ".join(pears)
    # Two apples taken once, though the commit reached the service twice (before and after the kill).
    assert json.loads(guide.run(show_stock)) == {"sku": "apple", "qty": 8}
    health = json.loads(guide.run(f"curl -s http://127.0.0.1:{guide.inventory_port}/healthz"))
    assert health["in_doubt"] == 0


def test_the_services_log_lines_share_the_sdks_format(guide: Guide) -> None:
    _, export, _, inventory_line, *_ = guide_commands()
    guide.env["TWOPC_COORDINATOR"] = guide.localize(export.split("=", 1)[1])
    (guide.directory / "var").mkdir()
    inventory = guide.service(inventory_line)
    inventory.start({"TWOPC_LOG_FORMAT": "json"})
    inventory.wait_ready(timeout=30)
    inventory.stop()

    lines = [line for line in inventory.log_text().splitlines() if not line.startswith("---")]
    records = [json.loads(line) for line in lines]  # every line JSON: the SDK's, uvicorn's, the service's
    events = [record["event"] for record in records]
    assert "participant started" in events
    assert any("Uvicorn running" in event for event in events)
    started = next(record for record in records if record["event"] == "participant started")
    assert started["in_doubt_branches"] == 0


def test_the_readme_links_the_guide() -> None:
    assert "](docs/embedding.md)" in README.read_text()


async def test_the_readmes_fastapi_example_serves_the_protocol(guide: Guide, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL) if "FastAPI" in b]
    (guide.directory / "var").mkdir()
    for name, value in {
        "NAME": "inventory",
        "SECRET": "change-me",
        "COORDINATOR_URL": f"http://127.0.0.1:{guide.coordinator_port}",
        "LOG_PATH": "var/inventory-twopc.db",
    }.items():
        monkeypatch.setenv(f"TWOPC_PARTICIPANT_{name}", value)
    spec = importlib.util.spec_from_file_location("inventory", guide.directory / "inventory.py")
    assert spec is not None and spec.loader is not None
    inventory = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(inventory)
    namespace: dict[str, Any] = {"InventoryResource": lambda path: inventory.InventoryResource(path, {"apple": 1})}
    exec(block, namespace)  # the README's lines, as printed
    app, participant = namespace["app"], namespace["participant"]

    data = orjson.dumps({"gtid": "g1", "branch": "inventory"})
    headers = {"Content-Type": "application/json", **signed_headers("change-me", "status", data)}
    async with (
        participant.lifespan(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://inventory.test") as client,
    ):
        response = await client.post("/twopc/status", content=data, headers=headers)

    assert (response.status_code, response.json()["status"]) == (200, "unknown")
