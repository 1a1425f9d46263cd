"""Local services for development and tests: ``twopc dev up postgres|kafka``.

Each service module (:func:`service` finds it by name) is a :class:`DevService`. What
``up`` returns is also written to ``{state_dir}/services.json``, which the test suite reads.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Protocol, cast

__all__ = ["SERVICES", "DevService", "default_state_dir", "read_services", "service", "write_service"]

#: Service name → module under compose.dev.
SERVICES = ("postgres", "kafka")


class DevService(Protocol):
    """What each service module offers."""

    def up(self, state_dir: Path) -> dict[str, Any]:
        """Start it, or reuse one already running; wait until it answers; say how to reach it."""

    def down(self, state_dir: Path) -> None:
        """Stop what ``up`` started; its data stays."""

    def restart(self, state_dir: Path, downtime: float = 0.0) -> dict[str, Any]:
        """Stop and start it again on the same address and data (for chaos runs)."""

    def status(self, state_dir: Path) -> dict[str, Any] | None:
        """How to reach it if it runs, else None."""


def service(name: str) -> DevService:
    """The module of service ``name`` (imported on demand: each needs its own client library)."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; choose from {', '.join(SERVICES)}")
    return cast(DevService, importlib.import_module(f"{__name__}.{name}"))


def default_state_dir() -> Path:
    return Path(os.environ.get("TWOPC_DEV_DIR", "var/dev")).resolve()


def read_services(state_dir: Path | None = None) -> dict[str, Any]:
    path = (state_dir or default_state_dir()) / "services.json"
    if not path.exists():
        return {}
    services: dict[str, Any] = json.loads(path.read_text())
    return services


def write_service(state_dir: Path, name: str, info: dict[str, Any] | None) -> None:
    """Record (or, with ``None``, forget) how to reach a running service."""
    state_dir.mkdir(parents=True, exist_ok=True)
    services = read_services(state_dir)
    if info is None:
        services.pop(name, None)
    else:
        services[name] = info
    (state_dir / "services.json").write_text(json.dumps(services, indent=2) + "\n")
