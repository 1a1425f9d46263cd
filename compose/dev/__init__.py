"""Local services for development and tests: ``twopc dev up postgres|kafka``.

Each service module offers ``up(state_dir) -> dict`` (start it, or reuse one that is
already running, wait until it answers, and return how to reach it), ``down(state_dir)``
(stop what ``up`` started), ``restart(state_dir, downtime)`` (stop and start again on
the same address and data, for chaos runs) and ``status(state_dir) -> dict | None``. What ``up`` returns
is also written to ``{state_dir}/services.json``, which the test suite reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["SERVICES", "default_state_dir", "read_services", "write_service"]

#: Service name → module under compose.dev.
SERVICES = ("postgres", "kafka")


def default_state_dir() -> Path:
    return Path(os.environ.get("TWOPC_DEV_DIR", "var/dev")).resolve()


def read_services(state_dir: Path | None = None) -> dict[str, Any]:
    path = (state_dir or default_state_dir()) / "services.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def write_service(state_dir: Path, name: str, info: dict[str, Any] | None) -> None:
    """Record (or, with ``None``, forget) how to reach a running service."""
    state_dir.mkdir(parents=True, exist_ok=True)
    services = read_services(state_dir)
    if info is None:
        services.pop(name, None)
    else:
        services[name] = info
    (state_dir / "services.json").write_text(json.dumps(services, indent=2) + "\n")
