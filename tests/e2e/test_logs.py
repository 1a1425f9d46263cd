"""TWOPC_LOG_FORMAT=json: the coordinator and a participant service, as real processes,
write their log as JSON lines (the start-up banner aside)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from compose.localcluster import LocalCluster


def log_lines(cluster: LocalCluster, node: str) -> list[str]:
    text = cluster.nodes[node].log_text()
    # The supervisor's own marker and the coordinator's banner are not the service's log.
    return [line for line in text.splitlines() if line and not line.startswith(("--- start", "twopc coordinator"))]


async def test_services_started_with_json_log_format_write_json_lines(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", queues=("queue-a",))
    for node in ("coordinator", "queue-a"):
        cluster.nodes[node].env["TWOPC_LOG_FORMAT"] = "json"
    await asyncio.to_thread(cluster.start)
    await asyncio.to_thread(cluster.stop)

    for node, expected in (("coordinator", "joined the cluster"), ("queue-a", "participant started")):
        lines = log_lines(cluster, node)
        events = [orjson.loads(line) for line in lines]  # every line parses
        assert expected in [e["event"] for e in events], lines
        assert all({"event", "level", "timestamp"} <= set(e) for e in events)
