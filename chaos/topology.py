"""The processes of a chaos run: a coordinator and participants, each link through a
fault proxy, each process armed by its own failpoints file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from chaos.participants import KINDS, BankKind, ParticipantKind
from chaos.proxy import FaultProxy
from chaos.scenario import Scenario
from compose.localcluster import coordinator_config
from compose.supervisor import Node, free_port, twopc_command

__all__ = ["Topology"]

SECRET = "chaos-secret"

# Loopback timeouts short enough that recovery shows within a run.
_TRANSACTIONS = """[transactions]
default_timeout_ms = 10000
prepare_timeout_ms = 3000
phase_two_timeout_ms = 1000
commit_wait_ms = 3000
retry_base_ms = 20
retry_cap_ms = 500
reaper_interval_ms = 200
"""


class Topology:
    def __init__(self, scenario: Scenario, directory: Path) -> None:
        self.scenario = scenario
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "failpoints").mkdir(exist_ok=True)
        coordinator_port = free_port()
        self.coordinator_url = f"http://127.0.0.1:{coordinator_port}"
        self.participants: dict[str, ParticipantKind] = {}
        self.proxies: dict[str, list[FaultProxy]] = {}
        transactions = _TRANSACTIONS
        if scenario.broken_build:
            transactions += "unsafe_lazy_decision = true\n"
        inbound_ports: dict[str, int] = {}
        banks = 0
        for spec in scenario.participants:
            port, inbound, outbound = free_port(), free_port(), free_port()
            # Coordinator → participant goes through one proxy, inquiries back through another.
            self.proxies[spec.name] = [FaultProxy(inbound, port), FaultProxy(outbound, coordinator_port)]
            participant = KINDS[spec.kind](
                name=spec.name,
                port=port,
                data_dir=directory / spec.name,
                coordinator_url=f"http://127.0.0.1:{outbound}",
                secret=SECRET,
            )
            if isinstance(participant, BankKind):
                participant.role, banks = banks, banks + 1
            self.participants[spec.name] = participant
            inbound_ports[spec.name] = inbound
        config = coordinator_config(coordinator_port, directory / "coordinator.db", inbound_ports, SECRET, transactions)
        (directory / "twopc.toml").write_text(config)
        env = {
            f"TWOPC_{section.upper()}__{key.upper()}": value if isinstance(value, str) else json.dumps(value)
            for section, values in scenario.coordinator.items()
            for key, value in values.items()
        }
        self.nodes: dict[str, Node] = {
            "coordinator": Node(
                "coordinator",
                twopc_command("serve", "--config", str(directory / "twopc.toml")),
                ready_url=f"{self.coordinator_url}/readyz",
                log_path=directory / "coordinator.log",
                env=env,
            )
        }

    def failpoints_file(self, node: str) -> Path:
        return self.directory / "failpoints" / node

    async def start(self, http: aiohttp.ClientSession) -> None:
        for participant in self.participants.values():
            await participant.provision()
            # The command line may name what provision made (a database, a topic).
            self.nodes[participant.name] = Node(
                participant.name, participant.argv(), participant.ready_url, self.directory / f"{participant.name}.log"
            )
        for name, node in self.nodes.items():
            node.env["TWOPC_FAILPOINTS_FILE"] = str(self.failpoints_file(name))
            self.failpoints_file(name).write_text("")
        for proxies in self.proxies.values():
            for proxy in proxies:
                await proxy.start()
        for node in self.nodes.values():
            node.start()
        await asyncio.gather(*(asyncio.to_thread(node.wait_ready, 60) for node in self.nodes.values()))
        for participant in self.participants.values():
            await participant.populate(http)

    async def restart(self, name: str) -> None:
        node = self.nodes[name]
        node.start()
        await asyncio.to_thread(node.wait_ready, 60)

    async def stop(self) -> None:
        import signal

        for node in self.nodes.values():
            node.kill(signal.SIGCONT)
            node.stop()
        for proxies in self.proxies.values():
            for proxy in proxies:
                await proxy.close()
        for participant in self.participants.values():
            try:
                await participant.release()
            except Exception as exc:  # leave the rest tidy even if one cannot be
                print(f"chaos: could not release {participant.name}: {exc}")
