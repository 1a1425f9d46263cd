"""An operator settles what the protocol cannot, with the real commands, against real
processes: a participant killed for good after its vote, and one forced by hand while
its coordinator could not reach it."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from compose.localcluster import LocalCluster
from compose.supervisor import twopc_command
from participant_sdk.client import CoordinatorClient
from tests.e2e.conftest import FAST, QUEUES, gtids_at, payloads
from twopc_core.testing import wait_until

pytestmark = pytest.mark.slow


def twopc(*args: str, token: str | None = None, secret: str | None = None) -> Any:
    """Run a twopc command as an operator would; its JSON output, or its stdout."""
    import os

    env = {**os.environ, "TWOPC_TOKEN": token or "", "TWOPC_SECRET": secret or ""}
    done = subprocess.run(twopc_command(*args), capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


async def test_a_participant_killed_for_good_after_its_vote_is_abandoned_and_the_others_commit(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(tmp_path / "cluster", queues=QUEUES, coordinator_toml=FAST, inquiry_interval=0.3)
    # queue-b votes yes, then dies as its commit arrives; nobody starts it again.
    cluster.nodes["queue-b"].env["TWOPC_FAILPOINTS"] = "participant.before_commit_applied=crash"
    try:
        cluster.start()
        url = cluster.coordinator_url
        operator = cluster.tokens["operator"]

        async with CoordinatorClient(url, token=cluster.tokens["client"]) as client:
            answer = await client.execute(payloads("lost"))
        gtid = answer["gtid"]
        assert answer["outcome"] == "committed"
        assert {b["name"] for b in answer["branches"] if b["pending"]} == {"queue-b"}
        victim = cluster.nodes["queue-b"]
        await wait_until(lambda: not victim.running, timeout=10, message="queue-b to die at its commit")

        abandoned = twopc(
            "txn", "abandon", gtid, "--participant", "queue-b", "--reason", "its disk is gone",
            "--coordinator", url, token=operator,
        )  # fmt: skip
        assert f"{gtid} committed" in abandoned and "queue-b:abandoned" in abandoned

        # Durable: a coordinator killed and started again still has it so, and does not
        # go back to retrying queue-b.
        cluster.nodes["coordinator"].kill(signal.SIGKILL)
        cluster.restart("coordinator")
        shown = twopc("txn", "show", gtid, "--json", "--coordinator", url, token=cluster.tokens["reader"])
        branches = {b["name"]: b for b in shown["branches"]}
        assert (shown["state"], branches["queue-a"]["state"], branches["queue-b"]["state"]) == (
            "committed",
            "committed",
            "abandoned",
        )
        assert branches["queue-b"]["resolved_by"] == "operator"

        async with aiohttp.ClientSession() as http:
            assert await gtids_at(http, cluster, "queue-a") == [gtid]
        acts = twopc("txn", "audit", "--json", "--coordinator", url, token=cluster.tokens["reader"])["acts"]
        assert [(a["action"], a["actor"], a["gtid"], a["participant"], a["reason"]) for a in acts] == [
            ("abandon", "operator", gtid, "queue-b", "its disk is gone")
        ]
        log = cluster.nodes["coordinator"].log_text()
        assert "operator act" in log and "its disk is gone" in log
    finally:
        cluster.stop()


async def test_a_participant_forced_against_the_decision_is_flagged_and_listed_as_heuristic(tmp_path: Path) -> None:
    # Phase 2 cannot leave the coordinator (its failpoint) and the queues do not ask by
    # themselves (a long inquiry interval): queue-b stays in doubt until forced.
    cluster = LocalCluster(tmp_path / "cluster", queues=QUEUES, coordinator_toml=FAST, inquiry_interval=600)
    failpoints = tmp_path / "coordinator.failpoints"
    failpoints.write_text("coordinator.before_commit_sent=error")
    cluster.nodes["coordinator"].env["TWOPC_FAILPOINTS_FILE"] = str(failpoints)
    try:
        cluster.start()
        url = cluster.coordinator_url
        async with CoordinatorClient(url, token=cluster.tokens["client"]) as client:
            answer = await client.commit((await client.begin(participants=payloads("forced")))["gtid"], wait="decision")
        gtid = answer["gtid"]
        assert answer["outcome"] == "committed"

        forced = twopc(
            "participant", "force", gtid, "--url", f"{cluster.url('queue-b')}/twopc", "--branch", "queue-b",
            "--outcome", "aborted", "--reason", "the coordinator was unreachable", secret=cluster.secret,
        )  # fmt: skip
        assert "aborted (heuristic)" in forced
        failpoints.write_text("")  # phase 2 goes out now, and queue-b answers what was done

        reader = cluster.tokens["reader"]

        async def flagged() -> bool:
            async with CoordinatorClient(url, token=reader) as client:
                return (await client.get(gtid)).get("heuristic") == "mixed"

        await wait_until(flagged, timeout=20, interval=0.2, message="the coordinator to record the damage")
        listed = twopc("txn", "list", "--heuristic", "--json", "--coordinator", url, token=reader)
        assert [t["gtid"] for t in listed["transactions"]] == [gtid]
        shown = twopc("txn", "show", gtid, "--json", "--coordinator", url, token=reader)
        branches = {b["name"]: b for b in shown["branches"]}
        assert (branches["queue-a"]["heuristic"], branches["queue-b"]["heuristic"]) == (None, "aborted")
        async with aiohttp.ClientSession() as http:
            assert await gtids_at(http, cluster, "queue-a") == [gtid]
            assert await gtids_at(http, cluster, "queue-b") == []
        assert "heuristic damage" in cluster.nodes["coordinator"].log_text()

        def audited() -> list[tuple[str, str, str]]:
            acts = twopc("txn", "audit", "--json", "--coordinator", url, token=reader)["acts"]
            return [(a["action"], a["actor"], a["gtid"]) for a in acts]

        await wait_until(audited, timeout=10, message="the damage in the audit")
        assert audited() == [("heuristic", "participant:queue-b", gtid)]
    finally:
        cluster.stop()
