"""The twopc command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from compose.localcluster import LocalCluster
from compose.supervisor import Node, free_port, twopc_command
from participant_sdk.client import CoordinatorClient
from tests.e2e.conftest import payloads

pytestmark = pytest.mark.slow


def twopc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        twopc_command(*args), capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


async def test_txn_show_and_list_print_json_and_tables(cluster: LocalCluster, client: CoordinatorClient) -> None:
    cluster.start()
    committed = await client.execute(payloads("cli"))
    url = cluster.coordinator_url
    reader = {"TWOPC_TOKEN": cluster.tokens["reader"]}

    shown = twopc("txn", "show", committed["gtid"], "--coordinator", url, "--json", "--token", cluster.tokens["client"])
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["outcome"] == "committed"

    listed = twopc("txn", "list", "--state", "committed", "--coordinator", url, "--json", env=reader)
    assert [t["gtid"] for t in json.loads(listed.stdout)["transactions"]] == [committed["gtid"]]

    table = twopc("txn", "list", "--coordinator", url, env=reader)
    assert committed["gtid"] in table.stdout and "committed" in table.stdout


def test_txn_commands_without_a_token_say_which_role_they_need(cluster: LocalCluster) -> None:
    cluster.start()
    missing = twopc("txn", "list", "--coordinator", cluster.coordinator_url, env={"TWOPC_TOKEN": ""})
    assert missing.returncode == 1 and "bearer token" in missing.stderr and "401" in missing.stderr
    as_client = twopc("txn", "list", "--coordinator", cluster.coordinator_url, "--token", cluster.tokens["client"])
    assert as_client.returncode == 1 and "reader" in as_client.stderr and "403" in as_client.stderr


def test_txn_show_of_an_unknown_gtid_says_so_and_fails(cluster: LocalCluster) -> None:
    cluster.start()
    shown = twopc(
        "txn", "show", "c1-nothing", "--coordinator", cluster.coordinator_url, "--token", cluster.tokens["reader"]
    )
    assert shown.returncode == 1
    assert "no transaction" in shown.stderr and "Traceback" not in shown.stderr


def test_txn_commands_say_when_the_coordinator_is_unreachable() -> None:
    shown = twopc("txn", "list", "--coordinator", "http://127.0.0.1:9")
    assert shown.returncode == 1 and "cannot reach the coordinator" in shown.stderr


def test_serve_refuses_a_bad_configuration_naming_the_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = 'seventy'\n")
    served = twopc("serve", "--config", str(config))
    assert served.returncode == 2
    assert "server.port" in served.stderr and "Traceback" not in served.stderr


@pytest.mark.parametrize(
    ("auth", "warning"),
    [("[auth]\nenabled = false\n", "auth.enabled is false"), ("", "no [[auth.tokens]] are configured")],
    ids=["authentication-off", "no-tokens"],
)
def test_serve_warns_at_start_when_nobody_or_everybody_may_call(tmp_path: Path, auth: str, warning: str) -> None:
    port = free_port()
    config = tmp_path / "twopc.toml"
    config.write_text(f'[server]\nport = {port}\n[log]\npath = "{tmp_path / "c.db"}"\n{auth}')
    node = Node(
        "c", twopc_command("serve", "--config", str(config)), f"http://127.0.0.1:{port}/readyz", tmp_path / "c.log"
    )
    node.start()
    try:
        node.wait_ready(timeout=30)
    finally:
        node.stop()
    assert f"WARNING: {warning}" in node.log_text()
