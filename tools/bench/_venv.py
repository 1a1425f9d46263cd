"""A virtual environment holding exactly what a lock file pins, hashes required, for
another version's services.

Built with uv, whose cache makes a second build of the same lock take seconds (pip takes
about a minute for the whole lock, every time). uv is the one beside this interpreter or
on PATH; failing both, the version the Makefile pins is installed once with pip under the
dev directory (``twopc dev``'s), as ``make lock`` installs it.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from compose.dev import default_state_dir
from tools.bench._resources import BenchSetupError
from tools.bench._workload import Progress

__all__ = ["UV_VERSION", "locked_venv", "uv_command"]

#: As the Makefile's UV_VERSION.
UV_VERSION = "0.13.10"
#: How often a long install says it is still going.
_HEARTBEAT_SECONDS = 10.0


def uv_command(progress: Progress, tools_dir: Path | None = None) -> str:
    """The uv to build with: beside this interpreter, on PATH, or else installed (once)
    into ``tools_dir`` (default: under the dev directory)."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file():
        return str(beside)
    found = shutil.which("uv")
    if found is not None:
        return found
    target = tools_dir or default_state_dir() / "bench-tools" / f"uv-{UV_VERSION}"
    uv = target / "bin" / "uv"
    if not uv.is_file():
        progress(f"no uv beside this Python nor on PATH: installing uv {UV_VERSION} with pip into {target} (once) ...")
        # Into a directory of this process's own, moved in place when whole: a run that
        # stops half way, or another at the same time, leaves no half-installed uv.
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        _run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(partial), f"uv=={UV_VERSION}"],
            f"install uv {UV_VERSION} with pip",
            progress,
        )
        try:
            partial.rename(target)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)  # another run put it there first
        if not uv.is_file():
            raise BenchSetupError(f"pip installed uv {UV_VERSION} into {target}, but there is no {uv}")
    return str(uv)


def locked_venv(lock: Path, into: Path, progress: Progress, uv: str | None = None) -> Path:
    """A new venv at ``into``, for this interpreter's Python, with what ``lock`` pins
    (``--require-hashes --no-deps``, as ``make setup`` installs it); its interpreter."""
    uv = uv or uv_command(progress)
    _run([uv, "venv", "--quiet", "--python", sys.executable, str(into)], "make a venv", progress)
    python = into / "bin" / "python"
    install = [uv, "pip", "install", "--python", str(python), "--require-hashes", "--no-deps", "-r", str(lock)]
    _run(install, f"install {lock.name}", progress)
    return python


def _run(argv: Sequence[str], what: str, progress: Progress) -> None:
    """Run an installer, passing on its summary lines (not one per package), and saying
    every few seconds that it is still going; its last lines in the error if it fails."""
    started = time.monotonic()
    lines: queue.Queue[str | None] = queue.Queue()
    try:
        process = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
        )
    except OSError as exc:
        raise BenchSetupError(f"could not {what}: {exc}") from None
    assert process.stdout is not None
    stdout = process.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    said: list[str] = []
    while True:
        try:
            line = lines.get(timeout=_HEARTBEAT_SECONDS)
        except queue.Empty:
            progress(f"  ... still at it: {what} ({time.monotonic() - started:.0f} s)")
            continue
        if line is None:
            break
        said.append(line)
        if line.strip() and not line.startswith((" + ", " - ")):
            progress(f"  {line.strip()}")
    if process.wait() != 0:
        tail = "\n".join(said[-15:])
        raise BenchSetupError(f"could not {what} (`{' '.join(argv)}` exited with {process.returncode}):\n{tail}")
