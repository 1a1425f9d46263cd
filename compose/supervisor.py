"""Start, watch, kill and restart real twopc processes on loopback.

Used by ``twopc demo``, by the kill tests and by chaos scenarios: every node is a real
OS process, so a kill is a real SIGKILL and a restart is a fresh interpreter that must
recover from what it left on disk.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Node", "free_port", "twopc_command"]


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, and that this process
    has not handed out before (the kernel may offer a just-closed port again, and a
    topology picks several before starting anything)."""
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free TCP port on loopback")


def twopc_command(*args: str) -> list[str]:
    """The ``twopc`` command installed beside this interpreter (a venv needs no
    activation), else the one on ``PATH``: services are started by their commands."""
    beside = Path(sys.executable).parent / "twopc"
    command = str(beside) if beside.is_file() else shutil.which("twopc")
    if command is None:
        raise RuntimeError("the twopc command is not installed: run `make setup` (pip install -e .)")
    return [command, *args]


@dataclass
class Node:
    """One supervised process: its command, where it logs, and how to tell it is up."""

    name: str
    argv: Sequence[str]
    ready_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, **(extra_env or {})}
        with open(self.log_path, "ab") as log_file:
            log_file.write(f"--- start {self.starts + 1} of {self.name}\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(
                list(self.argv), stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.starts += 1

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def stopped(self) -> bool:
        """Whether the process is stopped (by SIGSTOP, its own included)."""
        if not self.running:
            return False
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "T"
        except OSError:
            return False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll the readiness URL until it answers 200; fail early if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log_path}")
            time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` (SIGKILL by default) and, unless it is a pause, reap the process."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        if sig not in (signal.SIGSTOP, signal.SIGCONT):
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not go in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)

    def wait_exit(self, timeout: float = 30.0) -> int:
        """Wait for the process to end by itself (a crash failpoint); return its exit code."""
        if self.process is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.process.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
