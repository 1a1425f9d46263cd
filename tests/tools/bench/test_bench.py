"""Short smoke runs of `twopc bench`: the figures it promises are there and sensible, for
mock queues, PostgreSQL banks and Kafka, for coordinator replicas over a PostgreSQL log,
for another version of the code beside this checkout, and a run leaves nothing behind.

The PostgreSQL and Kafka runs use the test servers (see adapters/*/testing.py): without
one they fail, saying how to get it; they never skip.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from adapters.kafka.testing import bootstrap_servers
from adapters.postgres.testing import server_dsn
from compose.supervisor import twopc_command
from tools.bench import run_bench
from tools.bench._git import checkout_root
from tools.bench._load import percentile
from tools.bench._postgres import ACCOUNTS, OPENING_BALANCE, PostgresWorkload

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([], 99) == 0.0


def _bench(output: Path, workload: str, *options: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """A short run: 8 clients, 1.5 s measured after 0.5 s of warm-up, one sweep point."""
    short = ["--concurrency", "8", "--duration", "1.5", "--warmup", "0.5", "--sweep", "2"]
    run = subprocess.run(
        twopc_command("bench", "--workload", workload, *short, "--output", str(output), *options),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr
    return run, json.loads(output.read_text())


def _assert_sensible(report: dict[str, Any], output: Path) -> None:
    assert report["committed"] > 0 and report["errors"] == 0, report["error_samples"]
    assert report["baseline_errors"] == 0, report["error_samples"]
    assert report["throughput_tps"] > 0 and report["baseline_tps"] > 0
    assert report["overhead_ratio"] == pytest.approx(report["throughput_tps"] / report["baseline_tps"])
    for latency in (report["latency_ms"], report["baseline_latency_ms"]):
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert report["decisions_per_log_commit"] > 0
    assert report["coordinator_cpu_percent"] > 0 and report["participants_cpu_percent"] > 0
    per_transaction = report["cpu_ms_per_transaction"]
    expected = {"coordinator", "participants", "load_generator"}
    assert set(per_transaction) == expected | ({"log_database"} if report.get("log") == "postgres" else set())
    assert all(ms > 0 for ms in per_transaction.values())
    assert report["peak_rss_mb"]["coordinator"] > 10 and report["peak_rss_mb"]["participants"] > 10
    assert 0 < report["machine_busy_percent"] <= 100 and 0 < report["baseline_machine_busy_percent"] <= 100
    assert [p["concurrency"] for p in report["sweep"]] == [2, 8]
    assert output.with_suffix(".png").read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.slow
def test_a_short_mock_bench_writes_its_report_and_plot(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    run, report = _bench(output, "mock")
    _assert_sensible(report, output)
    assert report["participant_names"] == ["queue-a", "queue-b"]
    assert report["decisions_per_log_commit"] >= 1.0
    assert "committed / s" in run.stdout  # the table for people
    assert "through the coordinator" in run.stderr and "baseline" in run.stderr  # progress


@pytest.mark.slow
def test_a_short_postgres_bench_measures_two_banks_and_drops_its_databases(tmp_path: Path) -> None:
    dsn = server_dsn()
    output = tmp_path / "bench.json"
    _, report = _bench(output, "postgres", "--postgres-dsn", dsn)
    _assert_sensible(report, output)
    assert report["participant_names"] == ["bank-a", "bank-b"]
    assert "PREPARE TRANSACTION" in report["baseline"]
    with psycopg.connect(dsn) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"twopc_bench_{report['run_id']}_%"]
        ).fetchall()
    assert left == []


@pytest.mark.slow
def test_a_short_bench_of_two_replicas_on_the_postgres_log_reads_both_and_drops_the_log(tmp_path: Path) -> None:
    dsn = server_dsn()
    output = tmp_path / "bench.json"
    run, report = _bench(output, "mock", "--log", "postgres", "--replicas", "2", "--postgres-dsn", dsn)
    _assert_sensible(report, output)
    assert (report["log"], report["replicas"], report["replica_names"]) == ("postgres", 2, ["c1", "c2"])
    assert report["participant_names"] == ["queue-a", "queue-b"]  # the replicas are not participants
    by_replica = report["by_replica"]
    assert set(by_replica) == {"c1", "c2"}
    # The clients were spread over both: each replica forced decisions of its own.
    assert all(figures["decisions_logged"] > 0 and figures["log_commits"] > 0 for figures in by_replica.values())
    assert report["decisions_logged"] == sum(figures["decisions_logged"] for figures in by_replica.values())
    assert report["log_commits"] == sum(figures["log_commits"] for figures in by_replica.values())
    assert report["decisions_per_log_commit"] == pytest.approx(report["decisions_logged"] / report["log_commits"])
    assert "decisions per log commit" in run.stdout
    assert report["cpu_ms_per_transaction"]["log_database"] > 0  # the log's server backends were found
    assert set(report["peak_rss_mb"]) == {"coordinator", "participants"}
    with psycopg.connect(dsn) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = %s", [f"twopc_bench_{report['run_id']}_log"]
        )
        assert left.fetchall() == []


@pytest.mark.slow
def test_a_short_kafka_bench_measures_events_and_deletes_its_topics(tmp_path: Path) -> None:
    bootstrap = bootstrap_servers()
    output = tmp_path / "bench.json"
    _, report = _bench(output, "kafka", "--kafka-bootstrap", bootstrap)
    _assert_sensible(report, output)
    events = f"events-{report['run_id']}"
    assert report["participant_names"] == ["queue-a", events]
    assert asyncio.run(_topics_named(bootstrap, report["run_id"])) == []


async def _topics_named(bootstrap: str, fragment: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(topic for topic in await admin.list_topics() if fragment in topic)
    finally:
        await admin.close()


@pytest.mark.slow
async def test_the_postgres_baseline_does_the_banks_work_on_both_databases(tmp_path: Path) -> None:
    """One transfer through the coordinator and one as the baseline leave the same trace:
    an applied entry at each bank, balances moved by it, money conserved, nothing prepared."""
    dsn = await asyncio.to_thread(server_dsn)
    load = PostgresWorkload(tmp_path, server_dsn=dsn)
    await load.start(progress=lambda line: None)
    try:
        await load.open(2)
        try:
            assert await load.transaction(0, 1)
            assert await load.baseline(0, 2)
        finally:
            await load.close()
        totals = {}
        for bank, bank_dsn in load.banks.dsns.items():
            async with await psycopg.AsyncConnection.connect(bank_dsn) as conn:
                entries = await (await conn.execute("SELECT gtid, delta FROM applied_transfers")).fetchall()
                (total,) = await (await conn.execute("SELECT sum(balance) FROM accounts")).fetchone()
                prepared = await (
                    await conn.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()")
                ).fetchall()
            assert len(entries) == 2 and len({gtid for gtid, _ in entries}) == 2, entries
            assert total == ACCOUNTS * OPENING_BALANCE + sum(delta for _, delta in entries)
            assert prepared == []
            totals[bank] = total
        assert sum(totals.values()) == 2 * ACCOUNTS * OPENING_BALANCE
        assert totals["bank-a"] < ACCOUNTS * OPENING_BALANCE  # bank-a is debited
    finally:
        await load.stop()
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"twopc_bench_{load.run_id}_%"]
        )
        assert await cursor.fetchall() == []


@pytest.mark.slow
def test_a_short_pipeline_bench_drains_both_backlogs_and_removes_what_it_made(tmp_path: Path) -> None:
    dsn, bootstrap = server_dsn(), bootstrap_servers()
    output = tmp_path / "bench.json"
    run = subprocess.run(
        twopc_command(
            "bench", "--workload", "pipeline", "--events", "600", "--max-batch", "50", "--output", str(output)
        ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(output.read_text())
    assert (report["workload"], report["events"], report["max_batch"]) == ("pipeline", 600, 50)
    assert report["throughput_eps"] > 0 and report["baseline_eps"] > 0
    assert report["ratio"] == pytest.approx(report["throughput_eps"] / report["baseline_eps"])
    assert report["progress"]["coordinator"][-1][1] == report["progress"]["baseline"][-1][1] == 600
    assert set(report["cpu_ms_per_event"]) == {"coordinator", "pipeline", "participants"}
    assert "ratio to the baseline" in run.stdout
    assert output.with_suffix(".png").read_bytes()[:8] == PNG_SIGNATURE
    assert asyncio.run(_topics_named(bootstrap, report["run_id"])) == []
    with psycopg.connect(dsn) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"twopc_bench_{report['run_id']}_%"]
        ).fetchall()
    assert left == []


#: What the ref under test prints first in every process it runs, and this checkout never does.
REF_MARKER = "the ref under test is running"


@pytest.mark.slow
def test_a_ref_is_built_and_measured_beside_this_checkout_and_its_tree_and_venv_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ref: this checkout's HEAD in a clone, plus a commit that marks its processes."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(checkout_root()), str(clone)], check=True, capture_output=True)
    main = clone / "tools" / "cli" / "__main__.py"
    main.write_text(f"print({REF_MARKER!r}, flush=True)\n" + main.read_text())
    identity = ["-c", "user.name=bench test", "-c", "user.email=bench@test.invalid", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "-C", str(clone), *identity, "commit", "--quiet", "-am", "mark"], check=True)
    sha, short = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.split()
    # The run's temporary directory (where the ref's tree and venv go) made where it can be seen.
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    output, lines = tmp_path / "versions.json", []

    report = run_bench(
        "mock",
        concurrency=4,
        duration=1.0,
        warmup=0.3,
        sweep=[],
        output=output,
        directory=tmp_path / "run",
        progress=lines.append,
        compare_ref="HEAD",
        repository=clone,
    )

    assert report == {**json.loads(output.read_text()), "plot": str(output.with_suffix(".png"))}
    compared = report["compare_ref"]
    assert (compared["ref"], compared["sha"], compared["packages"]) == ("HEAD", sha, "its requirements.lock")
    head, ref = report["runs"]
    assert (head["code"], ref["code"]) == ("this checkout", f"HEAD ({short})") == ("this checkout", compared["label"])
    for run in (head, ref):
        assert run["committed"] > 0 and run["errors"] == 0, run["error_samples"]
    assert report["ratios"]["throughput_tps"] == pytest.approx(head["throughput_tps"] / ref["throughput_tps"])
    cpu_ratios = report["ratios"]["cpu_ms_per_transaction"]
    assert set(cpu_ratios) == {"coordinator", "participants", "load_generator"}
    for role, ratio in cpu_ratios.items():
        ms = head["cpu_ms_per_transaction"][role], ref["cpu_ms_per_transaction"][role]
        assert ratio == pytest.approx(ms[0] / ms[1])
    # The ref's coordinator and queues ran the ref's code; this checkout's did not.
    ref_dir, head_dir = tmp_path / "run" / f"HEAD-{short}-sqlite", tmp_path / "run" / "this-checkout-sqlite"
    for name in ("coordinator", "queue-a", "queue-b"):
        assert REF_MARKER in (ref_dir / f"{name}.log").read_text()
        assert REF_MARKER not in (head_dir / f"{name}.log").read_text()
    assert any("the venv is ready" in line for line in lines)
    assert list(temporary.iterdir()) == []
