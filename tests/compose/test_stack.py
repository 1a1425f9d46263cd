"""The compose stack, checked without a Docker engine.

``docker-compose config`` (Debian's package; ``make test`` installs it) validates
``compose/compose.yaml`` and resolves it as Compose does: anchors, merges, ``.env``
interpolation. Then every twopc service it defines runs here as a local process, from
that resolved definition: its ``command`` (to the ``twopc`` beside this interpreter),
its ``environment``, its mounted configuration and its health check. What a container
would reach by a service's name is reached here on loopback; only the parts of the
definition that this needs are rewritten (see :class:`Twin`). Then compose/README.md's
examples run against it as printed, and every target of ``prometheus.yml`` is scraped
with the credentials it names. A command line or configuration key in the stack that a
service no longer takes fails here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from adapters.kafka.testing import bootstrap_servers, unique_name
from adapters.postgres.testing import database_dsn, drop_database, server_dsn
from compose.supervisor import Node, free_port, twopc_command
from tests.e2e.test_quickstart import _commands

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "compose"
COMPOSE_FILE = STACK / "compose.yaml"
ENV_EXAMPLE = STACK / ".env.example"
#: The example of compose/secrets/metrics.token, which compose mounts for Prometheus.
METRICS_TOKEN_EXAMPLE = STACK / "secrets" / "metrics.token.example"
README = STACK / "README.md"

#: The stack's services that are not twopc's: the twin uses `twopc dev`'s PostgreSQL
#: and Kafka instead; Prometheus' configuration is checked by scraping what it names;
#: Jaeger only receives spans, which the example .env leaves off.
NOT_RUN_HERE = {"log-db", "bank-db", "kafka", "prometheus", "jaeger"}
#: Addresses a twopc service may name that the twin leaves as they are (traces are off).
LEFT_AS_THEY_ARE = {"jaeger:4318"}


def docker_compose() -> str:
    """Debian's docker-compose; under CI its absence fails the suite (`make test` installs it)."""
    found = shutil.which("docker-compose")
    if found is None:
        message = "docker-compose is not installed: `make test` installs it (apt-get install docker-compose)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def compose_config(
    env_file: Path, *args: str, profile: str | None = None, compose_file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` with only ``env_file`` for variables (none from this
    process's environment, which would win over the file)."""
    profiles = ["--profile", profile] if profile else []
    command = [docker_compose(), "-f", str(compose_file), "--env-file", str(env_file), *profiles, "config", *args]
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=environment, cwd=STACK)


def example_env() -> dict[str, str]:
    variables = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name] = value
    return variables


# --- The file validates --------------------------------------------------------------


@pytest.mark.parametrize("profile", [None, "observability"])
def test_the_compose_file_validates_with_the_example_env(profile: str | None) -> None:
    done = compose_config(ENV_EXAMPLE, "-q", profile=profile)
    assert done.returncode == 0 and not done.stdout, done.stderr + done.stdout


def test_validation_refuses_a_service_key_compose_does_not_know(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    restart: unless-stopped\n", "    restart_policy: x\n", 1))
    done = compose_config(ENV_EXAMPLE, "-q", compose_file=broken)
    assert done.returncode != 0 and "restart_policy" in done.stderr


def test_a_missing_secret_stops_compose_naming_where_it_goes(tmp_path: Path) -> None:
    without = tmp_path / ".env"
    without.write_text(ENV_EXAMPLE.read_text().replace("TWOPC_BANK_A_SECRET=", "UNUSED="))
    done = compose_config(without, "-q")
    assert done.returncode != 0 and "TWOPC_BANK_A_SECRET" in done.stderr and "compose/.env" in done.stderr


def test_the_example_tokens_are_the_ones_whose_hashes_the_coordinators_get() -> None:
    from twopc_core.tokens import token_hash

    variables = example_env()
    for role in ("CLIENT", "READER", "OPERATOR"):
        assert token_hash(variables[f"TWOPC_{role}_TOKEN"]) == variables[f"TWOPC_{role}_TOKEN_SHA256"]
    assert token_hash(METRICS_TOKEN_EXAMPLE.read_text().strip()) == variables["TWOPC_PROMETHEUS_TOKEN_SHA256"]


def test_the_stack_runs_the_kafka_release_the_test_suite_runs() -> None:
    pom = (ROOT / "compose" / "dev" / "kafka_pom.xml").read_text()
    tested = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert tested is not None
    stack = yaml.safe_load(COMPOSE_FILE.read_text())
    assert stack["services"]["kafka"]["image"] == f"apache/kafka:{tested.group(1)}"


def test_every_service_has_a_health_check_and_waits_for_what_it_needs_to_be_healthy() -> None:
    services = resolved()["services"]
    for name, service in services.items():
        if service.get("restart") == "no":
            continue  # a set-up job: it exits, and what needs it waits for its success
        assert "healthcheck" in service, f"{name} has no health check"
        for needed, condition in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if services[needed].get("restart") == "no" else "service_healthy"
            )
            assert condition == {"condition": expected}, f"{name} -> {needed}"


def test_every_set_up_job_is_waited_for_by_a_service_so_that_up_wait_succeeds() -> None:
    """`up --wait` takes a job's exit (even 0) for a failure unless a service that keeps
    running waits for the job's success."""
    services = resolved()["services"]
    jobs = {name for name, service in services.items() if service.get("restart") == "no"}
    assert jobs, "the stack has its set-up job"
    for job in jobs:
        waiting = [
            name
            for name, service in services.items()
            if service.get("depends_on", {}).get(job) == {"condition": "service_completed_successfully"}
            and service.get("restart") != "no"
        ]
        assert waiting, f"nothing waits for {job}"


def test_every_twopc_service_names_itself_to_jaeger_and_sends_traces_only_when_the_env_says_so(
    tmp_path: Path,
) -> None:
    jaeger = resolved("observability")["services"]["jaeger"]
    assert jaeger["profiles"] == ["observability"] and jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    twopc = {name: s["environment"] for name, s in resolved()["services"].items() if "build" in s and "ports" in s}
    assert {env["OTEL_EXPORTER_OTLP_ENDPOINT"] for env in twopc.values()} == {"http://jaeger:4318"}
    assert len({env["OTEL_SERVICE_NAME"] for env in twopc.values()}) == len(twopc)
    assert {env["OTEL_TRACES_EXPORTER"] for env in twopc.values()} == {"none"}
    tracing = tmp_path / ".env"
    tracing.write_text(ENV_EXAMPLE.read_text().replace("OTEL_TRACES_EXPORTER=none", "OTEL_TRACES_EXPORTER=otlp"))
    done = compose_config(tracing, profile="observability")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert {services[name]["environment"]["OTEL_TRACES_EXPORTER"] for name in twopc} == {"otlp"}


def test_every_published_port_is_on_the_hosts_loopback_only() -> None:
    for name, service in resolved("observability")["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


@functools.cache
def resolved(profile: str | None = None) -> dict[str, Any]:
    """The compose file as Compose reads it with the example .env (read once: the tests
    only read it, and docker-compose takes a while to start)."""
    done = compose_config(ENV_EXAMPLE, profile=profile)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


# --- The stack's own commands, as local processes ------------------------------------


@dataclass(frozen=True)
class Own:
    """A service's own listen port: the container's, and its twin's on loopback."""

    container_port: int
    local_port: int


class Twin:
    """The stack's twopc services as local processes.

    The mapping, all of it: a twopc service's ``NAME:PORT`` (its container port) is a
    free loopback port here, in the others' URLs, in its own listen options
    (``--host``/``--port``, ``[server] host``/``port``) and in its health check's
    ``127.0.0.1:PORT``; ``kafka:9092`` is the dev broker; each ``log-db``/``bank-db``
    database is a scratch database on the dev PostgreSQL; a volume's mount point is a
    directory of the test's, and a mounted file is a copy rewritten the same way. And,
    since a Kafka participant's transactional ids and stage topic are named after it on
    a broker other tests share, the events participant has a unique name here, wherever
    the stack (or its README) names it.
    """

    def __init__(self, directory: Path, services: dict[str, Any], databases: dict[str, str], kafka: str) -> None:
        self.directory = directory
        self.services = services
        #: Compose address (``c1:7070``, ``log-db:5432/twopc``) → local address.
        self.addresses: dict[str, str] = {"kafka:9092": kafka}
        #: A Kafka participant's name → its twin's (``--name=`` and JSON's ``"name": ``).
        self.names = {name: unique_name(name) for name, s in services.items() if s.get("command", [])[:1] == ["events"]}
        #: A published port on the host → its twin's port, for the README's URLs.
        self.published: dict[int, int] = {}
        self.own: dict[str, Own] = {}
        for name, service in self.twopc_services().items():
            for spec in service.get("ports", []):
                host_port, container_port = _published(spec)
                self.own[name] = Own(container_port, free_port())
                self.addresses[f"{name}:{container_port}"] = f"127.0.0.1:{self.own[name].local_port}"
                self.published[host_port] = self.own[name].local_port
        for compose_database, dsn in databases.items():
            where = conninfo_to_dict(dsn)
            self.addresses[compose_database] = f"{where['host']}:{where['port']}/{where['dbname']}"
        self.nodes: dict[str, Node] = {}
        self.health_checks: dict[str, list[str]] = {}
        #: Set-up jobs (no port): each runs to its end before the services start.
        self.jobs: dict[str, tuple[list[str], dict[str, str]]] = {}
        for name, service in self.twopc_services().items():
            self.add(name, service)

    def twopc_services(self) -> dict[str, Any]:
        return {name: s for name, s in self.services.items() if "build" in s}

    def add(self, name: str, service: dict[str, Any]) -> None:
        own = self.own.get(name)
        mounts = self.mount(name, service, own)
        argv = twopc_command(*(self.localize(arg, own, mounts) for arg in service["command"]))
        environment = {
            key: self.localize(str(value), own, mounts) for key, value in service.get("environment", {}).items()
        }
        self.assert_all_mapped(name, [*argv, *environment.values()])
        if own is None:
            self.jobs[name] = (argv, environment)
            return
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "python"], f"{name}: the health check is one the slim image can run"
        self.health_checks[name] = [sys.executable, *(self.localize(arg, own, mounts) for arg in test[2:])]
        self.assert_all_mapped(f"{name} health check", self.health_checks[name])
        ready_url = self.health_checks[name][-1]
        self.nodes[name] = Node(name, argv, ready_url, self.directory / f"{name}.log", env=environment)

    def mount(self, name: str, service: dict[str, Any], own: Own | None) -> dict[str, str]:
        """Each mount point's local path: a named volume is an empty directory, a file
        mounted read-only a localized copy."""
        mounts = {}
        for spec in service.get("volumes", []):
            source, target = str(spec).split(":")[:2]
            local = self.directory / name / target.strip("/").replace("/", "_")
            if source.startswith("/"):
                text = self.localize(Path(source).read_text(), own, {})
                settings = "\n".join(line.split("#")[0] for line in text.splitlines())  # comments may say anything
                self.assert_all_mapped(f"{name}:{target}", [settings])
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(text)
            else:
                local.mkdir(parents=True)
            mounts[target] = str(local)
        return mounts

    def rename(self, text: str) -> str:
        for name, twin_name in self.names.items():
            text = text.replace(f'"name": "{name}"', f'"name": "{twin_name}"')
            text = re.sub(rf"^--name={name}$", f"--name={twin_name}", text)
        return text

    def localize(self, text: str, own: Own | None, mounts: dict[str, str]) -> str:
        text = self.rename(text)
        for compose_address, local_address in self.addresses.items():
            text = text.replace(compose_address, local_address)
        for target, local in mounts.items():
            text = text.replace(target, local)
        if own is not None:
            container, local_port = own.container_port, own.local_port
            text = text.replace(f"127.0.0.1:{container}/", f"127.0.0.1:{local_port}/")  # its health check
            text = re.sub(rf"^--port={container}$", f"--port={local_port}", text)
            text = re.sub(rf"(?m)^port = {container}\b", f"port = {local_port}", text)
        text = text.replace("--host=0.0.0.0", "--host=127.0.0.1")
        return re.sub(r'(?m)^host = "0\.0\.0\.0"', 'host = "127.0.0.1"', text)

    def assert_all_mapped(self, where: str, texts: list[str]) -> None:
        """Nothing a process would reach by a compose name, or by a container's path, is left."""
        for text in texts:
            for other in self.services:
                for address in re.findall(rf"(?<![\w.-]){re.escape(other)}:\d+", text):
                    assert address in LEFT_AS_THEY_ARE, f"{where}: {address} has no local twin (in {text!r})"
            assert "/var/lib/twopc" not in text and "/etc/twopc" not in text, f"{where}: {text!r}"

    def start(self) -> None:
        for name, (argv, environment) in self.jobs.items():
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**os.environ, **environment})
            assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
        for node in self.nodes.values():
            node.start()
        for node in self.nodes.values():
            try:
                node.wait_ready(timeout=45)
            except (RuntimeError, TimeoutError) as exc:
                raise AssertionError(f"{exc}:\n{node.log_text()[-3000:]}") from None

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


def _published(spec: Any) -> tuple[int, int]:
    """(host port, container port) of a ``ports`` entry (``127.0.0.1:7071:7070/tcp``)."""
    found = re.fullmatch(r"(?:[\d.]+:)?(\d+):(\d+)(?:/\w+)?", str(spec))
    assert found is not None, spec
    return int(found.group(1)), int(found.group(2))


#: The stack's databases (``HOST:PORT/NAME`` as its DSNs name them), by scratch label.
STACK_DATABASES = {"log-db:5432/twopc": "log", "bank-db:5432/bank_a": "bank_a", "bank-db:5432/bank_b": "bank_b"}


@pytest.fixture(scope="module")
def databases() -> Iterator[dict[str, str]]:
    """A scratch database on the dev PostgreSQL for each of the stack's, dropped afterwards."""
    server = server_dsn()
    made = {}
    try:
        for compose_database, label in STACK_DATABASES.items():
            name = f"twopc_compose_{label}_{secrets.token_hex(4)}"
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            made[compose_database] = name
        yield {compose_database: database_dsn(server, name) for compose_database, name in made.items()}
    finally:
        for name in made.values():
            asyncio.run(drop_database(server, name))


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory, databases: dict[str, str]) -> Iterator[Twin]:
    stack = Twin(tmp_path_factory.mktemp("stack"), resolved()["services"], databases, bootstrap_servers())
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
    for node in stack.nodes.values():
        assert "Traceback" not in node.log_text(), node.log_text()


@pytest.mark.slow
def test_every_twopc_service_runs_from_its_definition_and_passes_its_health_check(twin: Twin) -> None:
    expected = {name for name in resolved()["services"] if name not in NOT_RUN_HERE}
    assert set(twin.nodes) | set(twin.jobs) == expected
    assert set(twin.nodes) == {"c1", "c2", "bank-a", "bank-b", "events", "queue"}
    for name, check in twin.health_checks.items():
        done = subprocess.run(check, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{name}: {done.stderr}"
    # The replicas share the log: each sees the other.
    cluster = json.loads(
        run(f"curl -s {local_url(twin, 7071)}/v1/cluster -H 'Authorization: Bearer {token('READER')}'")
    )
    assert sorted(replica["node_id"] for replica in cluster["replicas"]) == ["c1", "c2"]


@pytest.mark.slow
def test_a_health_check_fails_for_a_service_that_does_not_answer(twin: Twin) -> None:
    check = [*twin.health_checks["queue"][:-1], f"http://127.0.0.1:{free_port()}/healthz"]
    assert subprocess.run(check, capture_output=True, timeout=30).returncode == 1


# --- compose/README.md's examples, against the twin ----------------------------------


def readme_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL)


def token(role: str) -> str:
    return example_env()[f"TWOPC_{role}_TOKEN"]


def local_url(twin: Twin, host_port: int) -> str:
    return f"http://127.0.0.1:{twin.published[host_port]}"


def localize_readme(block: str, twin: Twin) -> list[str]:
    """The block's commands against the twin: the published ports are its ports, and
    compose/.env is the example beside it."""

    def to_twin(published: re.Match[str]) -> str:
        return f"127.0.0.1:{twin.published[int(published.group(1))]}/"

    return [
        twin.rename(re.sub(r"127\.0\.0\.1:(\d+)/", to_twin, command)).replace("compose/.env", str(ENV_EXAMPLE))
        for command in _commands(block)
    ]


def run(script: str) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_brings_the_stack_up_with_one_compose_command() -> None:
    (up,) = [block for block in readme_blocks() if "docker compose" in block]
    commands = _commands(up)
    assert commands[-1] == "docker compose -f compose/compose.yaml up --build --wait"
    for copy in commands[:-1]:
        _, example, real = copy.split("#")[0].split()
        assert (ROOT / example).is_file() and example == f"{real}.example", copy


def test_the_main_readme_deploys_with_the_same_command_and_links_the_stacks_readme() -> None:
    main = (ROOT / "README.md").read_text()
    deploy = main.split("## Deploy\n", 1)[1].split("\n## ", 1)[0]
    (up,) = [block for block in readme_blocks() if "docker compose" in block]
    assert _commands(up)[-1] in deploy and "(compose/README.md)" in deploy


@pytest.mark.slow
def test_the_readme_commits_across_the_queue_and_kafka_exactly_once(twin: Twin) -> None:
    (block,) = [b for b in readme_blocks() if "Idempotency-Key: compose-1" in b]
    export, execute, list_queue, list_orders = localize_readme(block, twin)
    orders_before = example_orders(twin)
    answer = json.loads(run(f"{export}\n{execute}"))
    assert answer["outcome"] == "committed", answer
    again = json.loads(run(f"{export}\n{execute}"))  # the same Idempotency-Key: the same transaction
    assert again["gtid"] == answer["gtid"]
    items = json.loads(run(list_queue))["items"]
    assert [(i["gtid"], i["value"]) for i in items] == [(answer["gtid"], "hello")]
    assert json.loads(run(list_orders))["messages"], "the README's read shows the topic"
    assert example_orders(twin) == orders_before + 1  # the orders topic outlives the test: count


def example_orders(twin: Twin) -> int:
    """How many of the README's order messages a read_committed consumer sees in ``orders``."""
    url = f"{local_url(twin, 7081)}/events/orders?limit=10000"
    messages = json.loads(run(f"curl -s '{url}'"))["messages"]
    return sum(1 for m in messages if (m["key"], m["value"]) == ("o-1", {"total": 30}))


@pytest.mark.slow
def test_the_readme_step_by_step_reads_back_through_the_other_replica(twin: Twin) -> None:
    (block,) = [b for b in readme_blocks() if "GTID=$(" in b]
    output = run("\necho\n".join(localize_readme(block, twin)))  # one answer a line
    answers = [json.loads(line) for line in output.splitlines() if line]
    enlisted, committed, read_back = answers
    assert "queue" in json.dumps(enlisted) and committed["outcome"] == "committed", answers
    assert (read_back["gtid"], read_back["outcome"]) == (committed["gtid"], "committed")
    assert read_back["gtid"].startswith("c1-")  # begun at c1, read through c2


def test_the_readme_moves_money_between_the_banks_through_c2(twin: Twin) -> None:
    (block,) = [b for b in readme_blocks() if "bank-a" in b and "alice" in b]
    *opening, transfer, accounts_a, accounts_b = localize_readme(block, twin)
    run("\n".join(opening))
    answer = json.loads(run(f"{opening[0]}\n{transfer}"))
    assert answer["outcome"] == "committed" and answer["gtid"].startswith("c2-"), answer
    assert json.loads(run(accounts_a))["accounts"] == [{"id": "alice", "balance": 70}]
    assert json.loads(run(accounts_b))["accounts"] == [{"id": "bob", "balance": 30}]


@pytest.mark.slow
def test_the_readme_metrics_answer_from_a_coordinator_with_the_reader_token_and_from_the_queue(twin: Twin) -> None:
    (block,) = [b for b in readme_blocks() if "/metrics | grep" in b]
    coordinator, queue = localize_readme(block, twin)
    assert "twopc_transactions_begun_total" in run(coordinator)
    assert "twopc_branch_votes_total" in run(queue)
    unauthorised = run(coordinator.replace("TWOPC_READER_TOKEN", "TWOPC_CLIENT_TOKEN"))
    assert "twopc_transactions_begun_total" not in unauthorised  # a client may not read them


# --- Prometheus' configuration -------------------------------------------------------


@pytest.mark.slow
def test_prometheus_scrapes_every_twopc_service_with_the_credentials_it_is_given(twin: Twin) -> None:
    prometheus = resolved("observability")["services"]["prometheus"]
    (config_mount,) = [v for v in prometheus["volumes"] if str(v).endswith(":/etc/prometheus/prometheus.yml:ro")]
    config = yaml.safe_load(Path(str(config_mount).split(":")[0]).read_text())
    # Compose mounts each of the service's secrets at /run/secrets/NAME; here, their examples.
    (secret,) = prometheus["secrets"]
    secret_files = {f"/run/secrets/{secret['source']}": METRICS_TOKEN_EXAMPLE}
    scraped = set()
    for job in config["scrape_configs"]:
        headers = ""
        if "authorization" in job:
            credentials = secret_files[job["authorization"]["credentials_file"]].read_text().strip()
            headers = f"-H 'Authorization: {job['authorization']['type']} {credentials}'"
        for target in (t for group in job["static_configs"] for t in group["targets"]):
            metrics = run(f"curl -s -f {headers} http://{twin.addresses[target]}{job.get('metrics_path', '/metrics')}")
            assert "# TYPE twopc_" in metrics, f"{job['job_name']}: {target}"
            scraped.add(target.split(":")[0])
    assert scraped == set(twin.nodes)
