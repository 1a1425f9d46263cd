"""A coordinator and bank participants (accounts in PostgreSQL) as real processes on
loopback, for kill tests and demos: every node can be SIGKILLed and restarted.

The databases are the caller's: one DSN per bank (each bank's tables are created by the
bank itself at start).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from twopc.localcluster import LocalCluster, Service

__all__ = ["BankCluster"]


class BankCluster(LocalCluster):
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
