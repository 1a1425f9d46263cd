"""A coordinator and mock-queue participants as real processes on loopback.

``twopc demo`` runs one for people; tests and chaos runs kill and restart its nodes.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twopc.supervisor import Node, free_port, twopc_command

__all__ = ["LocalCluster"]

_PARTICIPANT = """
[[participants]]
name = "{name}"
url = "http://127.0.0.1:{port}/twopc"
secret = "{secret}"
"""


@dataclass
class LocalCluster:
    directory: Path
    queues: Sequence[str] = ("queue-a", "queue-b")
    secret: str = "change-me"
    coordinator_port: int | None = None
    #: Extra settings for the coordinator's TOML (top-level keys and sections).
    coordinator_toml: str = ""
    inquiry_interval: float = 5.0
    nodes: dict[str, Node] = field(default_factory=dict, init=False)
    ports: dict[str, int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.directory = self.directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        # A fixed coordinator port puts the queues on the ports after it (the demo's
        # README examples rely on that); otherwise every port is a free one.
        base = self.coordinator_port
        self.ports["coordinator"] = base or free_port()
        for offset, name in enumerate(self.queues, start=1):
            self.ports[name] = base + offset if base else free_port()
        config = self.directory / "twopc.toml"
        text = f'node_id = "c1"\n{self.coordinator_toml}\n'
        text += f'[server]\nhost = "127.0.0.1"\nport = {self.ports["coordinator"]}\n'
        text += f'[log]\nstore = "sqlite"\npath = "{self.directory / "coordinator.db"}"\n'
        for name in self.queues:
            text += _PARTICIPANT.format(name=name, port=self.ports[name], secret=self.secret)
        config.write_text(text)
        self.config_path = config
        for name in self.queues:
            self.nodes[name] = Node(
                name,
                twopc_command(
                    "mockqueue",
                    "serve",
                    "--name",
                    name,
                    "--port",
                    str(self.ports[name]),
                    "--data",
                    str(self.directory / name),
                    "--coordinator",
                    self.coordinator_url,
                    "--secret",
                    self.secret,
                    "--inquiry-interval",
                    str(self.inquiry_interval),
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
