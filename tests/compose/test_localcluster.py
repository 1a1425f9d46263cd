"""The local cluster's participant services: the command each is started with names
every coordinator URL it is given, one ``--coordinator`` each."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from compose.localcluster import LocalCluster, Service


def coordinators(argv: list[str]) -> list[str]:
    return [value for option, value in pairwise(argv) if option == "--coordinator"]


def test_a_service_is_started_with_the_one_coordinator_url_given() -> None:
    argv = Service("queue-a").argv(7101, Path("d"), "http://127.0.0.1:7070", "s", 0.5)

    assert coordinators(argv) == ["http://127.0.0.1:7070"]
    assert argv[argv.index("--inquiry-interval") + 1] == "0.5"


def test_a_service_is_started_with_every_coordinator_replica_in_order() -> None:
    urls = ["http://127.0.0.1:7070", "http://127.0.0.1:7071", "http://127.0.0.1:7072"]
    argv = Service("bank-a", "bank", ("--dsn", "postgresql://x/y")).argv(7101, Path("d"), urls, "s", 5.0)

    assert coordinators(argv) == urls
    assert argv[-2:] == ["--dsn", "postgresql://x/y"]


def test_a_service_is_started_by_the_command_given_instead_of_the_twopc_command() -> None:
    argv = Service("queue-a").argv(7101, Path("d"), "http://127.0.0.1:7070", "s", 0.5, ("python", "-m", "tools.cli"))

    assert argv[:6] == ["python", "-m", "tools.cli", "mockqueue", "serve", "--name"]


def test_every_node_of_a_cluster_runs_its_command_with_its_environment(tmp_path: Path) -> None:
    command, env = ("/other/python", "-P", "-m", "tools.cli"), {"PYTHONPATH": "/other/tree"}
    cluster = LocalCluster(tmp_path, queues=("queue-a",), command=command, env=env)

    assert [node.argv[:5] for node in cluster.nodes.values()] == [
        [*command, "mockqueue"],
        [*command, "serve"],
    ]
    assert all(node.env == env for node in cluster.nodes.values())
