"""A coordinator and bank participants (accounts in PostgreSQL) as real processes on
loopback, for kill tests, chaos runs and demos: every node can be SIGKILLed and restarted.

The databases are the caller's: one DSN per bank (each bank's tables are created by the
bank itself at start).
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from twopc.supervisor import Node, free_port, twopc_command

__all__ = ["BankCluster"]

_PARTICIPANT = """
[[participants]]
name = "{name}"
url = "http://127.0.0.1:{port}/twopc"
secret = "{secret}"
"""


@dataclass
class BankCluster:
    directory: Path
    #: bank name → DSN of its database
    banks: Mapping[str, str]
    secret: str = "change-me"
    #: Extra settings for the coordinator's TOML (top-level keys and sections).
    coordinator_toml: str = ""
    inquiry_interval: float = 5.0
    sweep_interval: float = 60.0
    nodes: dict[str, Node] = field(default_factory=dict, init=False)
    ports: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ports["coordinator"] = free_port()
        for name in self.banks:
            self.ports[name] = free_port()
        config = self.directory / "twopc.toml"
        text = f'node_id = "c1"\n{self.coordinator_toml}\n'
        text += f'[server]\nhost = "127.0.0.1"\nport = {self.ports["coordinator"]}\n'
        text += f'[log]\nstore = "sqlite"\npath = "{self.directory / "coordinator.db"}"\n'
        for name in self.banks:
            text += _PARTICIPANT.format(name=name, port=self.ports[name], secret=self.secret)
        config.write_text(text)
        self.config_path = config
        for name, dsn in self.banks.items():
            self.nodes[name] = Node(
                name,
                twopc_command(
                    "bank",
                    "serve",
                    "--name",
                    name,
                    "--port",
                    str(self.ports[name]),
                    "--dsn",
                    dsn,
                    "--data",
                    str(self.directory / name),
                    "--coordinator",
                    self.coordinator_url,
                    "--secret",
                    self.secret,
                    "--inquiry-interval",
                    str(self.inquiry_interval),
                    "--sweep-interval",
                    str(self.sweep_interval),
                ),
                ready_url=f"{self.url(name)}/healthz",
                log_path=self.directory / f"{name}.log",
            )
        self.nodes["coordinator"] = Node(
            "coordinator",
            twopc_command("serve", "--config", str(config)),
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
