"""``twopc dev up|down|status kafka``: the broker's configuration, its jar cache, and a
real start, reuse and stop in a state directory of its own."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from compose.dev import kafka as dev_kafka


def test_the_pom_ships_with_the_package_and_pins_a_kafka_4_version() -> None:
    version = dev_kafka.kafka_version()
    assert re.fullmatch(r"4\.\d+\.\d+", version)
    pom = Path(dev_kafka.__file__).with_name("kafka_pom.xml").read_text()
    assert f"<kafka.version>{version}</kafka.version>" in pom and "<artifactId>kafka_2.13</artifactId>" in pom


def test_the_jar_cache_is_outside_the_work_tree_and_per_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TWOPC_CACHE_DIR", str(tmp_path / "cache"))
    assert dev_kafka.cache_dir("9.9.9") == tmp_path / "cache" / "kafka-9.9.9"
    monkeypatch.delenv("TWOPC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dev_kafka.cache_dir("9.9.9") == tmp_path / "xdg" / "twopc" / "kafka-9.9.9"


def test_a_complete_cache_is_used_without_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TWOPC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "")  # no mvn: a complete cache must not need it
    jars = tmp_path / "kafka-9.9.9" / "jars"
    jars.mkdir(parents=True)
    (jars / ".complete").write_text("kafka 9.9.9\n")
    assert dev_kafka.ensure_jars("9.9.9") == jars


def test_without_maven_an_empty_cache_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TWOPC_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="install it"):
        dev_kafka.ensure_jars("9.9.9")


def test_single_node_settings() -> None:
    text = dev_kafka.server_properties(Path("/data"), 9092, 9093)
    settings = dict(line.split("=", 1) for line in text.splitlines())
    assert settings["process.roles"] == "broker,controller"
    assert settings["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert settings["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert settings["auto.create.topics.enable"] == "false"
    for name in ("offsets.topic", "transaction.state.log", "share.coordinator.state.topic"):
        assert settings[f"{name}.replication.factor"] == "1"
        assert settings[f"{name}.num.partitions"] == "1"
    assert settings["transaction.state.log.min.isr"] == settings["share.coordinator.state.topic.min.isr"] == "1"
    assert settings["log.dirs"] == "/data"


def test_cluster_ids_look_like_kafkas() -> None:
    ids = {dev_kafka.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{21}", i) for i in ids)


def test_nothing_to_stop_or_report_in_an_empty_state_dir(tmp_path: Path) -> None:
    assert dev_kafka.status(tmp_path) is None
    dev_kafka.down(tmp_path)  # no error
    assert not (tmp_path / "kafka" / "broker.json").exists()


def test_a_stale_state_file_is_not_a_running_broker(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "kafka").mkdir()
    state = {"pid": dead.pid, "bootstrap": "127.0.0.1:1", "version": dev_kafka.kafka_version(), "log": "x"}
    (tmp_path / "kafka" / "broker.json").write_text(json.dumps(state))
    assert dev_kafka.status(tmp_path) is None
    dev_kafka.down(tmp_path)
    assert not (tmp_path / "kafka" / "broker.json").exists()


def _port_open(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


@pytest.mark.slow
def test_up_starts_a_broker_that_answers_reuses_it_and_down_stops_it(tmp_path: Path) -> None:
    info = dev_kafka.up(tmp_path)
    try:
        assert info["version"] == dev_kafka.kafka_version()
        assert _port_open(info["bootstrap"])
        assert dev_kafka.status(tmp_path) == info
        assert dev_kafka.up(tmp_path)["pid"] == info["pid"]  # reused, not started again
    finally:
        dev_kafka.down(tmp_path)
    assert dev_kafka.status(tmp_path) is None
    assert not _port_open(info["bootstrap"])
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)
    assert not Path(info["data"]).exists()
