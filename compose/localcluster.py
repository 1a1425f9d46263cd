"""A coordinator and participant services as real processes on loopback.

``twopc demo`` runs one for people; tests, chaos runs and the benchmark kill and
restart its nodes. Participants are any of twopc's services — ``mockqueue``, ``bank``,
``events`` — which share one command-line shape (``twopc KIND serve --name --port
--data --coordinator --secret --inquiry-interval``, ``--coordinator`` once per
coordinator replica) plus options of their own.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from compose.supervisor import Node, free_port, twopc_command

__all__ = ["TOKEN_ROLES", "BankCluster", "LocalCluster", "Service", "coordinator_config", "local_tokens"]


@dataclass(frozen=True)
class Service:
    """A participant service to run: its name, its kind and the options of its kind."""

    name: str
    kind: str = "mockqueue"
    args: tuple[str, ...] = ()

    def argv(
        self,
        port: int,
        data_dir: Path,
        coordinator_urls: str | Sequence[str],
        secret: str,
        inquiry_interval: float,
        command: Sequence[str] = (),
    ) -> list[str]:
        """The command that serves it; ``coordinator_urls``: the coordinator's URL, or every
        replica's (one ``--coordinator`` each). ``command`` runs twopc (default: the
        ``twopc`` command beside this interpreter)."""
        urls = [coordinator_urls] if isinstance(coordinator_urls, str) else list(coordinator_urls)
        coordinators = [arg for url in urls for arg in ("--coordinator", url)]
        return _twopc(
            command,
            self.kind, "serve", "--name", self.name, "--port", str(port), "--data", str(data_dir),
            *coordinators, "--secret", secret, "--inquiry-interval", str(inquiry_interval),
            *self.args,
        )  # fmt: skip


def _twopc(command: Sequence[str], *args: str) -> list[str]:
    return [*command, *args] if command else twopc_command(*args)


#: The tokens a local cluster makes, by name, with their roles; the name is also the
#: token file's (``client.token`` in the cluster's directory).
TOKEN_ROLES: Mapping[str, tuple[str, ...]] = {
    "client": ("client",),
    "reader": ("reader",),
    "operator": ("operator",),
}


def local_tokens(directory: Path) -> dict[str, str]:
    """The cluster's bearer tokens by name: read from ``NAME.token`` in ``directory``
    when a run before made them (a token a person exported stays good), else made and
    written there, readable by the owner only."""
    from twopc_core.tokens import new_token

    directory.mkdir(parents=True, exist_ok=True)
    tokens = {}
    for name in TOKEN_ROLES:
        path = directory / f"{name}.token"
        token = path.read_text().strip() if path.is_file() else ""
        if not token:
            token = new_token()
            path.touch(mode=0o600)
            path.write_text(token + "\n")
        tokens[name] = token
    return tokens


def coordinator_config(
    port: int,
    log_path: Path,
    participants: Mapping[str, int],
    secret: str,
    extra: str = "",
    node_id: str = "c1",
    log_dsn: str | None = None,
    lease_ms: int | None = None,
    tokens: Mapping[str, str] | None = None,
) -> str:
    """The coordinator's TOML: ``participants`` maps names to the ports it reaches them on.

    ``extra`` (top-level keys or whole sections) goes before the fixed sections. With
    ``log_dsn`` the log is that PostgreSQL database, shared with the other replicas.
    ``tokens`` (by name, see :data:`TOKEN_ROLES`) are those it accepts, by their hashes.
    """
    from twopc_core.tokens import token_hash

    text = f'node_id = "{node_id}"\n{extra}\n'
    text += f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
    if log_dsn is None:
        text += f'[log]\nstore = "sqlite"\npath = "{log_path}"\n'
    else:
        text += f'[log]\nstore = "postgres"\ndsn = "{log_dsn}"\n'
        text += f'[cluster]\nadvertise_url = "http://127.0.0.1:{port}"\n'
        if lease_ms is not None:
            text += f"lease_ms = {lease_ms}\n"
    for name, participant_port in participants.items():
        text += f'\n[[participants]]\nname = "{name}"\n'
        text += f'url = "http://127.0.0.1:{participant_port}/twopc"\nsecret = "{secret}"\n'
    for name, token in (tokens or {}).items():
        roles = ", ".join(f'"{role}"' for role in TOKEN_ROLES[name])
        text += f'\n[[auth.tokens]]\nname = "{name}"\nsha256 = "{token_hash(token)}"\nroles = [{roles}]\n'
    return text


@dataclass
class LocalCluster:
    directory: Path
    #: Mock queues by name (the default topology).
    queues: Sequence[str] = ("queue-a", "queue-b")
    secret: str = "change-me"
    coordinator_port: int | None = None
    #: Extra settings for the coordinator's TOML (top-level keys and sections).
    coordinator_toml: str = ""
    inquiry_interval: float = 5.0
    #: Participants of other kinds, after the queues.
    services: Sequence[Service] = ()
    #: Coordinator replicas; more than one needs ``log_dsn``.
    replicas: int = 1
    #: A PostgreSQL database for a log the replicas share (else each has its SQLite file).
    log_dsn: str | None = None
    #: The replicas' lease (``[cluster] lease_ms``), when not the default.
    lease_ms: int | None = None
    #: What runs twopc for every node, with the environment it needs, when not the
    #: ``twopc`` command beside this interpreter: another version of the code (the bench's
    #: ``--compare-ref``), e.g. ``python -P -m tools.cli`` with its tree on PYTHONPATH.
    command: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict, init=False)
    ports: dict[str, int] = field(default_factory=dict, init=False)
    #: Bearer tokens the coordinator accepts, by name (``client``, ``reader``,
    #: ``operator``), also in ``NAME.token`` files in the directory.
    tokens: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.replicas < 1 or (self.replicas > 1 and self.log_dsn is None):
            raise ValueError("several replicas need a shared log: give log_dsn")
        self.directory = self.directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tokens = local_tokens(self.directory)
        participants = [Service(name) for name in self.queues] + list(self.services)
        # A fixed coordinator port puts the replicas on it and the ports after it, then the
        # participants (the demo's README examples rely on that); otherwise every port is free.
        base = self.coordinator_port
        ports = iter(range(base, base + 1000)) if base else None
        for name in self.replica_names:
            self.ports[name] = next(ports) if ports else free_port()
        for service in participants:
            self.ports[service.name] = next(ports) if ports else free_port()
        participant_ports = {s.name: self.ports[s.name] for s in participants}
        for service in participants:
            self.nodes[service.name] = Node(
                service.name,
                service.argv(
                    self.ports[service.name],
                    self.directory / service.name,
                    self.coordinator_urls,
                    self.secret,
                    self.inquiry_interval,
                    self.command,
                ),
                ready_url=f"{self.url(service.name)}/healthz",
                log_path=self.directory / f"{service.name}.log",
                env=dict(self.env),
            )
        for number, name in enumerate(self.replica_names, start=1):
            node_id = f"c{number}"
            config_path = self.directory / ("twopc.toml" if name == "coordinator" else f"{node_id}.toml")
            config_path.write_text(
                coordinator_config(
                    self.ports[name],
                    self.directory / f"{name}.db",
                    participant_ports,
                    self.secret,
                    self.coordinator_toml,
                    node_id=node_id,
                    log_dsn=self.log_dsn,
                    lease_ms=self.lease_ms,
                    tokens=self.tokens,
                )
            )
            self.nodes[name] = Node(
                name,
                _twopc(self.command, "serve", "--config", str(config_path)),
                ready_url=f"{self.url(name)}/readyz",
                log_path=self.directory / f"{name}.log",
                env=dict(self.env),
            )
        self.config_path = self.directory / ("twopc.toml" if self.replicas == 1 else "c1.toml")

    @property
    def replica_names(self) -> list[str]:
        """The coordinator nodes: ``coordinator`` alone, or ``c1`` ... ``cN``."""
        return ["coordinator"] if self.replicas == 1 else [f"c{n}" for n in range(1, self.replicas + 1)]

    @property
    def coordinator_url(self) -> str:
        """The first replica's URL."""
        return self.url(self.replica_names[0])

    @property
    def coordinator_urls(self) -> list[str]:
        return [self.url(name) for name in self.replica_names]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes.values():
            node.start()
        for node in self.nodes.values():
            node.wait_ready(timeout)

    def restart(self, name: str, env: dict[str, str] | None = None, timeout: float = 30.0) -> None:
        """Start a node that was killed or stopped, and wait until it is ready."""
        node = self.nodes[name]
        node.start(env)
        node.wait_ready(timeout)

    def stop(self) -> None:
        for node in reversed(list(self.nodes.values())):
            node.kill(signal.SIGCONT)  # a paused node cannot hear SIGTERM
            node.stop()


class BankCluster(LocalCluster):
    """A coordinator and bank participants (accounts in PostgreSQL): the databases are
    the caller's, one DSN per bank; each bank creates its own tables at start."""

    def __init__(
        self,
        directory: Path,
        banks: Mapping[str, str],
        secret: str = "change-me",
        coordinator_toml: str = "",
        inquiry_interval: float = 5.0,
        sweep_interval: float = 60.0,
    ) -> None:
        """``banks`` maps each bank's name to the DSN of its database."""
        self.banks = dict(banks)
        super().__init__(
            directory,
            queues=(),
            secret=secret,
            coordinator_toml=coordinator_toml,
            inquiry_interval=inquiry_interval,
            services=[
                Service(name, "bank", ("--dsn", dsn, "--sweep-interval", str(sweep_interval)))
                for name, dsn in banks.items()
            ],
        )
