"""Workloads on a :class:`LocalCluster`: the coordinator and participant services as
processes, transactions through ``/v1/transactions:execute``, and a baseline that makes
the same participant calls (signed prepare, then commit) without a coordinator."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg

from compose.localcluster import LocalCluster, Service
from compose.supervisor import Node
from tools.bench._code import THIS_CHECKOUT, check_command_line
from tools.bench._coordinators import Coordinators
from tools.bench._resources import BenchSetupError
from tools.bench._workload import Progress, Workload
from twopc_core.metrics import totals
from twopc_core.signing import signed_headers

__all__ = ["Branch", "ClusterWorkload"]

Branch = tuple[str, Any]
"""One branch of a transaction: the participant's name and its payload."""

#: Far in the future: the baseline has no coordinator to set a prepare deadline.
_NO_DEADLINE = 4e9
_START_TIMEOUT = 60.0
#: Lines of a service's log quoted when it did not start.
_LOG_TAIL_LINES = 12


class ClusterWorkload(Workload):
    """Subclasses say what to provision, which services to run and what each transaction
    asks of them (:meth:`branches`)."""

    baseline_description = (
        "the same participant calls without a coordinator: a signed prepare to every participant at once, "
        "then a commit to every participant at once"
    )

    def __init__(self, directory: Path, coordinator_toml: str = "", coordinators: Coordinators | None = None) -> None:
        self.directory = directory
        self.coordinator_toml = coordinator_toml
        self.coordinators = coordinators or Coordinators()
        #: Tells this run's transactions, databases and topics from any other run's.
        self.run_id = secrets.token_hex(4)
        self.cluster: LocalCluster | None = None
        self._cleanup = AsyncExitStack()
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count()
        #: Where each worker sends its transactions: the replicas in turn.
        self._execute_urls: list[str] = []
        self._authorization = ""
        #: The postgres log's database, and a connection to it that lists its backends.
        self._log_dsn: str | None = None
        self._log_conn: psycopg.AsyncConnection[Any] | None = None
        #: The server processes serving the replicas' log connections, as far as seen.
        self._log_backends: set[int] = set()

    # -- what a subclass provides ----------------------------------------------------------

    @abstractmethod
    async def provision(self, cleanup: AsyncExitStack, progress: Progress) -> tuple[Sequence[str], Sequence[Service]]:
        """Make what the services need (registering its removal on ``cleanup``); return
        the mock queues and the other services to run."""

    async def populate(self, progress: Progress) -> None:
        """Set the running services up (accounts, ...)."""

    @abstractmethod
    def branches(self, worker: int, seq: int) -> list[Branch]:
        """The participants and payloads of worker ``worker``'s transaction number ``seq``."""

    # -- the Workload interface ----------------------------------------------------------

    @property
    def participant_names(self) -> list[str]:
        cluster = self._running
        return [name for name in cluster.nodes if name not in cluster.replica_names]

    @property
    def replica_names(self) -> list[str]:
        return self._running.replica_names

    async def start(self, progress: Progress) -> None:
        try:
            queues, services = await self.provision(self._cleanup, progress)
            log_dsn = await self._cleanup.enter_async_context(self.coordinators.log_database(self.run_id, progress))
            self._log_dsn = log_dsn
            code = self.coordinators.code or THIS_CHECKOUT
            self.cluster = LocalCluster(
                self.directory,
                queues=queues,
                services=services,
                coordinator_toml=self.coordinator_toml + self.coordinators.coordinator_toml,
                replicas=self.coordinators.replicas,
                log_dsn=log_dsn,
                command=code.command,
                env=code.env,
            )
            if not self.coordinators.metrics:
                for name in self.participant_names:
                    self.cluster.nodes[name].env["TWOPC_METRICS"] = "false"
            if code.commit is not None:
                progress(f"checking that {code.label}'s services take the options this bench starts them with ...")
                await asyncio.to_thread(check_command_line, code, [node.argv for node in self.cluster.nodes.values()])
            # Registered last, so the processes stop before what they use is removed.
            self._cleanup.push_async_callback(asyncio.to_thread, self.cluster.stop)
            progress(
                f"starting {', '.join(self.cluster.replica_names)} ({self.coordinators.log} log) and "
                f"{', '.join(self.participant_names)}"
                + ("" if self.coordinators.code is None else f" ({code.label})")
                + f" in {self.directory} ..."
            )
            try:
                await asyncio.to_thread(self.cluster.start, _START_TIMEOUT)
            except (RuntimeError, TimeoutError) as exc:
                if code.commit is None:
                    raise
                # Another version may refuse this checkout's configuration: say so, with
                # what it said, rather than a stack trace.
                exited = [node for node in self.cluster.nodes.values() if node.starts and not node.running]
                # Its log is quoted: the run's directory may be gone by the time this is read.
                reason = str(exc).partition("; see ")[0]
                raise BenchSetupError(
                    f"{code.label}'s services did not start as this checkout's bench configures them: {reason}"
                    + "".join(_log_tail(node) for node in exited)
                ) from None
            await self.populate(progress)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        await self._cleanup.aclose()

    async def open(self, concurrency: int) -> None:
        # Each worker may hold a connection to the coordinator and one to every participant.
        limit = concurrency * (len(self.participant_names) + 1)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))
        self._execute_urls = [f"{url}/v1/transactions:execute" for url in self._running.coordinator_urls]
        self._authorization = f"Bearer {self._running.tokens['client']}"
        if self._log_dsn is not None:
            self._log_conn = await psycopg.AsyncConnection.connect(self._log_dsn, autocommit=True)

    async def close(self) -> None:
        if self._log_conn is not None:
            await self._log_conn.close()
            self._log_conn = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def metrics(self) -> dict[str, dict[str, float]]:
        if self._log_conn is not None:
            # A backend the pool opens later is seen at the next reading; all its CPU is
            # then of the stretch it appeared in, which is where it counts.
            cursor = await self._log_conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            self._log_backends.update(pid for (pid,) in await cursor.fetchall())
        cluster = self._running
        return dict(
            zip(
                cluster.replica_names,
                await asyncio.gather(*(self._replica_metrics(url) for url in cluster.coordinator_urls)),
                strict=True,
            )
        )

    async def _replica_metrics(self, url: str) -> dict[str, float]:
        reader = {"Authorization": f"Bearer {self._running.tokens['reader']}"}
        async with self.session.get(f"{url}/metrics", headers=reader) as response:
            text = await response.text()
        return {name.removeprefix("twopc_"): value for name, value in totals(text).items()}

    def pids(self) -> dict[str, list[int | None]]:
        nodes = self._running.nodes
        pids: dict[str, list[int | None]] = {
            "coordinator": [nodes[name].pid for name in self.replica_names],
            "participants": [nodes[name].pid for name in self.participant_names],
        }
        if self._log_dsn is not None:
            # The PostgreSQL log's work on the server (its statements, its WAL flushes):
            # CPU that the SQLite log spends inside the coordinator.
            pids["log_database"] = [*sorted(self._log_backends)]
        return pids

    async def transaction(self, worker: int, seq: int) -> bool:
        body = orjson.dumps(
            {"participants": [{"name": name, "payload": payload} for name, payload in self.branches(worker, seq)]}
        )
        # Round-robin by worker: each client keeps to one replica, as a client behind a
        # load balancer with sticky connections would.
        async with self.session.post(
            self._execute_urls[worker % len(self._execute_urls)],
            data=body,
            headers={"Content-Type": "application/json", "Authorization": self._authorization},
        ) as response:
            answer = orjson.loads(await response.read())
        if response.status != 200:
            raise RuntimeError(f"coordinator answered {response.status}: {answer}")
        return bool(answer["outcome"] == "committed")

    async def baseline(self, worker: int, seq: int) -> bool:
        gtid = self.baseline_gtid()
        branches = self.branches(worker, seq)
        votes = await asyncio.gather(
            *(
                self.call(name, "prepare", {"gtid": gtid, "branch": name, "payload": payload, "deadline": _NO_DEADLINE})
                for name, payload in branches
            )
        )
        committed = all(vote.get("vote") == "yes" for vote in votes)
        # A no leaves the others prepared: abort them, as a coordinator would.
        decision = "commit" if committed else "abort"
        await asyncio.gather(
            *(
                self.call(name, decision, {"gtid": gtid, "branch": name})
                for (name, _), vote in zip(branches, votes, strict=True)
                if committed or vote.get("vote") == "yes"
            )
        )
        return committed

    # -- helpers -------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "open() first"
        return self._session

    @property
    def _running(self) -> LocalCluster:
        assert self.cluster is not None, "start() first"
        return self.cluster

    def baseline_gtid(self) -> str:
        """A transaction id no coordinator gave, unique in this run."""
        return f"bench-{self.run_id}-{next(self._ids)}"

    async def call(self, participant: str, operation: str, message: dict[str, Any]) -> dict[str, Any]:
        """One signed participant-protocol call, as the coordinator would make it."""
        cluster = self._running
        body = orjson.dumps(message)
        headers = {"Content-Type": "application/json", **signed_headers(cluster.secret, operation, body)}
        async with self.session.post(f"{cluster.url(participant)}/twopc/{operation}", data=body, headers=headers) as r:
            answer: dict[str, Any] = orjson.loads(await r.read())
        if r.status != 200:
            raise RuntimeError(f"{participant} answered {r.status} to {operation}: {answer}")
        return answer


def _log_tail(node: Node) -> str:
    lines = node.log_text().strip().splitlines()[-_LOG_TAIL_LINES:]
    return f"\n--- the end of {node.name}'s log:\n" + "\n".join(lines)
