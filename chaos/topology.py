"""The processes of a chaos run: the coordinator (or its replicas over a PostgreSQL log)
and participants, each link through a fault proxy, each process armed by its own
failpoints file."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from pathlib import Path

import aiohttp

from chaos.participants import KINDS, BankKind, ParticipantKind
from chaos.proxy import FaultProxy
from chaos.scenario import Scenario
from compose.localcluster import coordinator_config, local_tokens
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
        #: Bearer tokens the coordinators accept, by name: ``client`` runs the workload,
        #: ``reader`` the checkers and the nemesis' watches.
        self.tokens = local_tokens(directory)
        cluster = scenario.cluster
        #: The coordinator nodes: ``coordinator`` alone, or the replicas ``c1`` ... ``cN``.
        self.replicas = ["coordinator"] if cluster.replicas == 1 else [f"c{n}" for n in range(1, cluster.replicas + 1)]
        self.coordinator_ports = {name: free_port() for name in self.replicas}
        self.participants: dict[str, ParticipantKind] = {}
        #: Per participant: the link the coordinators call it on, then one per replica back.
        self.proxies: dict[str, list[FaultProxy]] = {}
        #: Per replica, with a shared log: its link to the log's database.
        self.log_proxies: dict[str, FaultProxy] = {}
        self.log_dsn: str | None = None
        self._log_database = f"twopc_chaos_log_{secrets.token_hex(3)}" if cluster.shared else ""
        self._server_dsn = ""
        self._inbound_ports: dict[str, int] = {}
        banks = 0
        for spec in scenario.participants:
            port, inbound = free_port(), free_port()
            outbound = {name: free_port() for name in self.replicas}
            self.proxies[spec.name] = [
                FaultProxy(inbound, port),
                *(FaultProxy(outbound[name], self.coordinator_ports[name]) for name in self.replicas),
            ]
            participant = KINDS[spec.kind](
                name=spec.name,
                port=port,
                data_dir=directory / spec.name,
                coordinator_urls=[f"http://127.0.0.1:{outbound[name]}" for name in self.replicas],
                secret=SECRET,
                delay_ms=spec.delay_ms,
            )
            if isinstance(participant, BankKind):
                participant.role, banks = banks, banks + 1
            self.participants[spec.name] = participant
            self._inbound_ports[spec.name] = inbound
        self.nodes: dict[str, Node] = {}
        #: The nodes a nemesis is striking right now.
        self.struck: set[str] = set()

    @property
    def coordinator_urls(self) -> list[str]:
        """Every replica's URL (one with a single coordinator)."""
        return [self.url(name) for name in self.replicas]

    @property
    def coordinator_url(self) -> str:
        return self.coordinator_urls[0]

    def url(self, replica: str) -> str:
        return f"http://127.0.0.1:{self.coordinator_ports[replica]}"

    def failpoints_file(self, node: str) -> Path:
        return self.directory / "failpoints" / node

    async def start(self, http: aiohttp.ClientSession) -> None:
        if self.scenario.cluster.shared:
            await self._provision_log()
        self._add_coordinators()
        for participant in self.participants.values():
            await participant.provision()
            # The command line may name what provision made (a database, a topic).
            self.nodes[participant.name] = Node(
                participant.name, participant.argv(), participant.ready_url, self.directory / f"{participant.name}.log"
            )
        for name, node in self.nodes.items():
            node.env["TWOPC_FAILPOINTS_FILE"] = str(self.failpoints_file(name))
            self.failpoints_file(name).write_text("")
        for proxy in self._all_proxies():
            await proxy.start()
        for node in self.nodes.values():
            node.start()
        await asyncio.gather(*(asyncio.to_thread(node.wait_ready, 60) for node in self.nodes.values()))
        for participant in self.participants.values():
            await participant.populate(http)

    def _add_coordinators(self) -> None:
        cluster = self.scenario.cluster
        env = {
            f"TWOPC_{section.upper()}__{key.upper()}": value if isinstance(value, str) else json.dumps(value)
            for section, values in self.scenario.coordinator.items()
            for key, value in values.items()
        }
        for number, name in enumerate(self.replicas, start=1):
            log_dsn = None
            if cluster.shared:
                assert self.log_dsn is not None
                log_dsn = _through(self.log_dsn, self.log_proxies[name].listen_port)
            config = self.directory / f"{name}.toml"
            config.write_text(
                coordinator_config(
                    self.coordinator_ports[name],
                    self.directory / f"{name}.db",
                    self._inbound_ports,
                    SECRET,
                    _TRANSACTIONS,
                    node_id=f"c{number}",
                    log_dsn=log_dsn,
                    lease_ms=cluster.lease_ms if cluster.shared else None,
                    tokens=self.tokens,
                )
            )
            self.nodes[name] = Node(
                name,
                twopc_command("serve", "--config", str(config)),
                ready_url=f"{self.url(name)}/readyz",
                log_path=self.directory / f"{name}.log",
                env=dict(env),
            )

    async def _provision_log(self) -> None:
        """A database of the run's own for the replicas' log, on the dev PostgreSQL, and
        each replica's link to it through a fault proxy."""
        import psycopg

        from adapters.postgres.testing import database_dsn, server_dsn

        self._server_dsn = await asyncio.to_thread(server_dsn)
        async with await psycopg.AsyncConnection.connect(self._server_dsn, autocommit=True) as admin:
            await admin.execute(f'CREATE DATABASE "{self._log_database}"')
        self.log_dsn = database_dsn(self._server_dsn, self._log_database)
        port = int(psycopg.conninfo.conninfo_to_dict(self.log_dsn).get("port") or 5432)
        self.log_proxies = {name: FaultProxy(free_port(), port) for name in self.replicas}

    async def _release_log(self) -> None:
        if not self.log_dsn:
            return
        from adapters.postgres.testing import drop_database

        await drop_database(self._server_dsn, self._log_database)

    def _all_proxies(self) -> list[FaultProxy]:
        return [proxy for proxies in self.proxies.values() for proxy in proxies] + list(self.log_proxies.values())

    async def restart(self, name: str) -> None:
        node = self.nodes[name]
        node.start()
        await asyncio.to_thread(node.wait_ready, 60)

    async def stop(self) -> None:
        for node in self.nodes.values():
            node.kill(signal.SIGCONT)
        # Stopped together: one by one, each replica left would take the others over.
        await asyncio.gather(*(asyncio.to_thread(node.stop) for node in self.nodes.values()))
        for proxy in self._all_proxies():
            await proxy.close()
        for participant in self.participants.values():
            try:
                await participant.release()
            except Exception as exc:  # leave the rest tidy even if one cannot be
                print(f"chaos: could not release {participant.name}: {exc}")
        try:
            await self._release_log()
        except Exception as exc:
            print(f"chaos: could not drop the log's database: {exc}")


def _through(dsn: str, port: int) -> str:
    """``dsn`` reached through the proxy on ``port`` of loopback."""
    import psycopg

    return psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=port)
