"""What the measure loop asks of a workload: set it up, run one transaction through the
coordinator or the same work without it, and name the processes whose CPU counts."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

__all__ = ["Progress", "Workload"]

Progress = Callable[[str], None]
"""Where a workload says what it is doing during a long step (one line at a time)."""


class Workload(ABC):
    """One benchmark topology.

    Lifecycle: :meth:`start` (provision what the participants need, start the processes),
    :meth:`open` (client connections for ``concurrency`` workers), then any number of
    :meth:`transaction` and :meth:`baseline` calls, :meth:`close`, :meth:`stop` (stop the
    processes, remove what :meth:`start` provisioned). :meth:`stop` is safe to call after
    a :meth:`start` that failed part way.
    """

    #: The ``--workload`` name.
    name: ClassVar[str]
    #: What :meth:`baseline` does, in one sentence, for the report.
    baseline_description: ClassVar[str]
    #: Unique to this run; part of the names of the databases and topics it makes.
    run_id: str

    @property
    @abstractmethod
    def participant_names(self) -> list[str]:
        """The participants every transaction enlists."""

    @property
    @abstractmethod
    def replica_names(self) -> list[str]:
        """The coordinator replicas the clients are spread over."""

    @abstractmethod
    async def start(self, progress: Progress) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def open(self, concurrency: int) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def transaction(self, worker: int, seq: int) -> bool:
        """One global transaction through the coordinator; True when it committed."""

    @abstractmethod
    async def baseline(self, worker: int, seq: int) -> bool:
        """The same participant work without a coordinator; True when it committed."""

    @abstractmethod
    async def metrics(self) -> dict[str, dict[str, float]]:
        """Each coordinator replica's counters (``/metrics``, without the ``twopc_``
        prefix), by replica name."""

    @abstractmethod
    def pids(self) -> dict[str, list[int | None]]:
        """Process ids by role (``coordinator``, ``participants``), for their CPU use."""
