"""A private single-node Kafka broker (KRaft) for development and tests: ``twopc dev up kafka``.

No Docker: the broker's jars come from Maven Central through the pom shipped beside this
module (``kafka_pom.xml``, which pins the version), copied once by ``mvn`` into a cache
that outlives the work tree (``$TWOPC_CACHE_DIR``, else ``$XDG_CACHE_HOME/twopc``, else
``~/.cache/twopc``; one folder per Kafka version). The machine's Java (17 or later, from
``JAVA_HOME`` or ``PATH``) runs it.

``up`` formats a fresh data directory in ``{state_dir}/kafka/data``, starts one combined
broker and controller on free loopback ports (kept in ``{state_dir}/kafka/broker.json``)
with the single-node settings the 2PC adapter needs, waits until the broker answers a
metadata request, and returns ``{"bootstrap": "127.0.0.1:PORT", ...}``; it reuses a broker
that is already running. ``down`` stops it (SIGTERM, then SIGKILL) and drops its data.
``TWOPC_KAFKA_JAVA_OPTS`` replaces the JVM options (heap and GC) when set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from compose.supervisor import free_port

__all__ = [
    "cache_dir",
    "down",
    "ensure_jars",
    "find_java",
    "kafka_version",
    "new_cluster_id",
    "restart",
    "server_properties",
    "status",
    "up",
]

_POM = "kafka_pom.xml"
#: A small heap: the broker shares a 2-core machine with the suite.
_JAVA_OPTS = ("-Xms128m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
_START_TIMEOUT = 90.0
_STOP_TIMEOUT = 30.0
_MIN_JAVA = 17

_LOG4J2 = """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = STDOUT
appender.file.type = Console
appender.file.name = STDOUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


# -- the jars ------------------------------------------------------------------------------


def _pom_text() -> str:
    return resources.files("compose.dev").joinpath(_POM).read_text(encoding="utf-8")


def kafka_version() -> str:
    """The Kafka version the shipped pom pins."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", _pom_text())
    if match is None:
        raise RuntimeError(f"{_POM} does not name a <kafka.version>")
    return match.group(1)


def cache_dir(version: str | None = None) -> Path:
    """Where the jars of one Kafka version are kept between runs."""
    root = os.environ.get("TWOPC_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "twopc"
    return base.expanduser().resolve() / f"kafka-{version or kafka_version()}"


def ensure_jars(version: str | None = None) -> Path:
    """The folder of the broker's jars, copied from Maven Central by ``mvn`` the first time."""
    version = version or kafka_version()
    target = cache_dir(version) / "jars"
    if (target / ".complete").exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            "Maven (`mvn`) is needed once to fetch the Kafka broker's jars: install it (e.g. `apt-get install maven`)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copy into a private folder and rename it into place, so that a run interrupted half
    # way (or two runs at once) never leaves a folder that looks complete but is not.
    partial = target.parent / f"jars.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    pom = target.parent / _POM
    pom.write_text(_pom_text(), encoding="utf-8")
    _progress(f"fetching Kafka {version} from Maven Central into {target} (once) ...")
    started = time.monotonic()
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies", f"-DoutputDirectory={partial}"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
        shutil.rmtree(partial, ignore_errors=True)
        output = (result.stdout + result.stderr).strip()[-2000:]
        raise RuntimeError(f"mvn could not fetch Kafka {version} (exit {result.returncode}):\n{output}")
    (partial / ".complete").write_text(f"kafka {version}\n")
    try:
        partial.rename(target)
    except OSError:  # another run finished first: keep its copy
        shutil.rmtree(partial, ignore_errors=True)
    _progress(f"fetched Kafka {version} in {time.monotonic() - started:.1f}s")
    return target


def find_java() -> str:
    """The ``java`` to run the broker with (17 or later); RuntimeError saying how to get one."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home and (Path(home) / "bin" / "java").exists() else shutil.which("java")
    if java is None:
        raise RuntimeError(
            "no `java` found: install a JDK 17 or later (e.g. `apt-get install openjdk-17-jdk-headless`)"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is not None:
        major = int(match.group(1))
        if major == 1 and match.group(2):  # "1.8.0" is Java 8
            major = int(match.group(2))
        if major < _MIN_JAVA:
            raise RuntimeError(f"Kafka {kafka_version()} needs Java {_MIN_JAVA} or later; {java} is Java {major}")
    return java


# -- configuration -------------------------------------------------------------------------


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """``server.properties`` of a single combined broker and controller on loopback."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # One replica of everything, and one partition for the internal topics: starts fast.
        "num.partitions": "1",
        "default.replication.factor": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "share.coordinator.state.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Topics are made on purpose (the adapter refuses messages for unknown topics).
        "auto.create.topics.enable": "false",
        # Few threads: a 2-core machine runs the broker beside the test suite.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "background.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


# -- the broker ----------------------------------------------------------------------------


def _base(state_dir: Path) -> Path:
    return Path(state_dir).resolve() / "kafka"


def _read_state(base: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((base / "broker.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reaps it when it is our own child
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] == "Z"
    except (OSError, IndexError):
        return True
    if not zombie:
        return True
    # A zombie leader answers kill(0) until its parent reaps it. If it is our own child,
    # it is gone only once reaped (a JVM's leader turns zombie while its threads exit).
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # someone else's: dead once its last thread is gone
        with contextlib.suppress(OSError):
            return len(os.listdir(f"/proc/{pid}/task")) > 1
        return False
    return done != pid


def _is_our_broker(pid: int, base: Path) -> bool:
    """Whether ``pid`` is the broker started from ``base`` (and not a recycled pid)."""
    if not _alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc here: trust the pid
    return b"kafka.Kafka" in cmdline and str(base / "server.properties").encode() in cmdline


def _answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request within ``timeout``."""
    return asyncio.run(_describe_cluster(bootstrap, timeout)) is not None


async def _describe_cluster(bootstrap: str, timeout: float) -> dict[str, Any] | None:
    from aiokafka.admin import AIOKafkaAdminClient

    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # connection refusals while it starts are expected
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        return await asyncio.wait_for(admin.describe_cluster(), timeout)
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
        quiet.setLevel(level)


def _progress(message: str) -> None:
    print(f"kafka: {message}", file=sys.stderr, flush=True)


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _format(java: str, jars: Path, base: Path) -> None:
    data = base / "data"
    shutil.rmtree(data, ignore_errors=True)
    properties = str(base / "server.properties")
    result = subprocess.run(
        [java, "-cp", str(jars / "*"), "kafka.tools.StorageTool", "format", "-t", new_cluster_id(), "-c", properties],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"formatting the broker's storage failed: {(result.stderr or result.stdout).strip()}")


def new_cluster_id() -> str:
    """A random cluster id as Kafka writes them (16 bytes, URL-safe base64, no padding),
    made here to save starting a JVM for ``StorageTool random-uuid``."""
    while True:
        text = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not text.startswith("-"):  # Kafka avoids these too: they read as a command-line flag
            return text


def _java_opts() -> list[str]:
    custom = os.environ.get("TWOPC_KAFKA_JAVA_OPTS")
    return custom.split() if custom else list(_JAVA_OPTS)


def _start(base: Path, version: str) -> dict[str, Any]:
    port, controller_port = free_port(), free_port()
    while controller_port == port:
        controller_port = free_port()
    (base / "server.properties").write_text(server_properties(base / "data", port, controller_port))
    (base / "log4j2.properties").write_text(_LOG4J2)
    _format(find_java(), ensure_jars(version), base)
    state = {
        "bootstrap": f"127.0.0.1:{port}",
        "version": version,
        "controller_port": controller_port,
        "log": str(base / "broker.log"),
        "data": str(base / "data"),
    }
    return _launch(base, state)


def _launch(base: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Run the broker on the configuration and data in ``base``; record its pid."""
    jars = ensure_jars(state["version"])
    argv = [
        find_java(),
        *_java_opts(),
        f"-Dlog4j2.configurationFile={base / 'log4j2.properties'}",
        "-cp",
        str(jars / "*"),
        "kafka.Kafka",
        str(base / "server.properties"),
    ]
    with open(state["log"], "ab") as log_file:
        process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base, start_new_session=True
        )
    state = {**state, "pid": process.pid}
    (base / "broker.json").write_text(json.dumps(state, indent=2) + "\n")
    return state


def _wait_ready(state: dict[str, Any], base: Path, timeout: float) -> None:
    started = time.monotonic()
    deadline = started + timeout
    next_note = started + 5
    while True:
        if not _alive(state["pid"]):
            tail = _log_tail(Path(state["log"]))
            raise RuntimeError(f"the broker exited while starting; the end of {state['log']}:\n{tail}")
        if _answers(state["bootstrap"], timeout=2.0):
            _progress(f"broker {state['bootstrap']} answers after {time.monotonic() - started:.1f}s")
            return
        now = time.monotonic()
        if now >= deadline:
            _stop_pid(state["pid"], base)
            raise RuntimeError(f"the broker did not answer within {timeout:.0f}s; see {state['log']}")
        if now >= next_note:
            _progress(f"waiting for the broker at {state['bootstrap']} ({now - started:.0f}s) ...")
            next_note = now + 5
        time.sleep(0.25)


def _stop_pid(pid: int, base: Path) -> None:
    if not _is_our_broker(pid, base):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT
    while _alive(pid):
        if time.monotonic() >= deadline:
            _progress(f"broker {pid} ignored SIGTERM for {_STOP_TIMEOUT:.0f}s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + _STOP_TIMEOUT
        time.sleep(0.1)


# -- the public functions (see compose.dev) ----------------------------------------------------


def up(state_dir: Path) -> dict[str, Any]:
    """Start the broker (or reuse the running one), wait until it answers, return how to reach it."""
    base = _base(state_dir)
    base.mkdir(parents=True, exist_ok=True)
    version = kafka_version()
    state = _read_state(base)
    if state is not None and _is_our_broker(state["pid"], base):
        if state.get("version") == version and _answers(state["bootstrap"]):
            _progress(f"reusing the broker at {state['bootstrap']}")
            return state
        _stop_pid(state["pid"], base)  # another version, or not answering: start afresh
    started = time.monotonic()
    state = _start(base, version)
    _wait_ready(state, base, _START_TIMEOUT)
    _progress(f"Kafka {version} up in {time.monotonic() - started:.1f}s")
    return state


def restart(state_dir: Path, downtime: float = 0.0) -> dict[str, Any]:
    """Stop the running broker and start it again on the same ports and data.

    What a broker restart in production looks like to clients: the same address, every
    committed record still there (chaos runs use it; ``down`` + ``up`` would start afresh).
    """
    base = _base(state_dir)
    state = _read_state(base)
    if state is None or not _is_our_broker(int(state["pid"]), base):
        raise RuntimeError("no broker started by `twopc dev up kafka` is running here")
    _stop_pid(int(state["pid"]), base)
    time.sleep(downtime)
    state = _launch(base, state)
    _wait_ready(state, base, _START_TIMEOUT)
    return state


def down(state_dir: Path) -> None:
    """Stop the broker ``up`` started and drop its data (the jar cache stays)."""
    base = _base(state_dir)
    state = _read_state(base)
    if state is not None:
        _stop_pid(int(state["pid"]), base)
    (base / "broker.json").unlink(missing_ok=True)
    shutil.rmtree(base / "data", ignore_errors=True)


def status(state_dir: Path) -> dict[str, Any] | None:
    """How to reach the running broker, or None when none is running and answering."""
    base = _base(state_dir)
    state = _read_state(base)
    if state is None or not _is_our_broker(int(state["pid"]), base) or not _answers(state["bootstrap"]):
        return None
    return state
