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

__all__ = ["BankCluster", "LocalCluster", "Service", "coordinator_config"]


@dataclass(frozen=True)
class Service:
    """A participant service to run: its name, its kind and the options of its kind."""

    name: str
    kind: str = "mockqueue"
    args: tuple[str, ...] = ()

    def argv(
        self, port: int, data_dir: Path, coordinator_urls: str | Sequence[str], secret: str, inquiry_interval: float
    ) -> list[str]:
        """The command that serves it; ``coordinator_urls``: the coordinator's URL, or every
        replica's (one ``--coordinator`` each)."""
        urls = [coordinator_urls] if isinstance(coordinator_urls, str) else list(coordinator_urls)
        coordinators = [arg for url in urls for arg in ("--coordinator", url)]
        return twopc_command(
            self.kind, "serve", "--name", self.name, "--port", str(port), "--data", str(data_dir),
            *coordinators, "--secret", secret, "--inquiry-interval", str(inquiry_interval),
            *self.args,
        )  # fmt: skip


def coordinator_config(
    port: int, log_path: Path, participants: Mapping[str, int], secret: str, extra: str = "", node_id: str = "c1"
) -> str:
    """The coordinator's TOML: ``participants`` maps names to the ports it reaches them on.

    ``extra`` (top-level keys or whole sections) goes before the fixed sections.
    """
    text = f'node_id = "{node_id}"\n{extra}\n'
    text += f'[server]\nhost = "127.0.0.1"\nport = {port}\n'
    text += f'[log]\nstore = "sqlite"\npath = "{log_path}"\n'
    for name, participant_port in participants.items():
        text += f'\n[[participants]]\nname = "{name}"\n'
        text += f'url = "http://127.0.0.1:{participant_port}/twopc"\nsecret = "{secret}"\n'
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
    nodes: dict[str, Node] = field(default_factory=dict, init=False)
    ports: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        participants = [Service(name) for name in self.queues] + list(self.services)
        # A fixed coordinator port puts the participants on the ports after it (the
        # demo's README examples rely on that); otherwise every port is a free one.
        base = self.coordinator_port
        self.ports["coordinator"] = base or free_port()
        for offset, service in enumerate(participants, start=1):
            self.ports[service.name] = base + offset if base else free_port()
        self.config_path = self.directory / "twopc.toml"
        self.config_path.write_text(
            coordinator_config(
                self.ports["coordinator"],
                self.directory / "coordinator.db",
                {s.name: self.ports[s.name] for s in participants},
                self.secret,
                self.coordinator_toml,
            )
        )
        for service in participants:
            self.nodes[service.name] = Node(
                service.name,
                service.argv(
                    self.ports[service.name],
                    self.directory / service.name,
                    self.coordinator_url,
                    self.secret,
                    self.inquiry_interval,
                ),
                ready_url=f"{self.url(service.name)}/healthz",
                log_path=self.directory / f"{service.name}.log",
            )
        self.nodes["coordinator"] = Node(
            "coordinator",
            twopc_command("serve", "--config", str(self.config_path)),
            ready_url=f"{self.coordinator_url}/readyz",
            log_path=self.directory / "coordinator.log",
        )

    @property
    def coordinator_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['coordinator']}"

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
