"""``twopc fuzz-api``: schemathesis against a live coordinator's own OpenAPI document,
with every check it has and a token that may call every operation.

The coordinator runs with two mock queues in a directory of the run's own; the
document names them as the only participants an enlistment may carry, so schema-valid
requests reach the protocol's logic rather than an "unknown participant".
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compose.localcluster import LocalCluster
from twopc_core.tokens import new_token, token_hash

__all__ = ["FuzzResult", "fuzz_api"]

#: Schema-valid requests the API may still refuse for what they mean, not their shape:
#: an Idempotency-Key reused with another body (422, as the IETF draft says), a commit
#: of a transaction the run aborted meanwhile (409). Everything else is the defaults.
_CONFIG = """\
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""


@dataclass(frozen=True)
class FuzzResult:
    exit_code: int
    #: schemathesis' report (its standard output).
    report: str


def fuzz_api(
    max_time: int, *, seed: int | None = None, workers: int = 1, progress: Callable[[str], None] | None = None
) -> FuzzResult:
    """Run schemathesis for ``max_time`` seconds; its exit code is 0 when no check failed."""
    say = progress or (lambda _: None)
    directory = Path(tempfile.mkdtemp(prefix="twopc-fuzz-"))
    token = new_token()
    roles = '["client", "operator"]'
    # A commit waits up to commit_wait_ms for phase 2, which a fuzzed enlistment (a branch
    # "already prepared" that its participant never prepared) never completes: bounded
    # well under schemathesis' response-time limit (10 s), so a check fails only for a
    # slow answer the API did not promise.
    extra = "[transactions]\ncommit_wait_ms = 2000\n\n"
    extra += f'[[auth.tokens]]\nname = "fuzzer"\nsha256 = "{token_hash(token)}"\nroles = {roles}\n'
    cluster = LocalCluster(directory / "cluster", coordinator_toml=extra)
    config = directory / "schemathesis.toml"
    config.write_text(_CONFIG)
    try:
        say(f"starting a coordinator and two mock queues in {directory} ...")
        cluster.start()
        argv = [
            sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color", "run",
            f"{cluster.coordinator_url}/openapi.json", "--checks", "all",
            "-H", f"Authorization: Bearer {token}",
            "--max-time", str(max_time), "--workers", str(workers),
        ]  # fmt: skip
        if seed is not None:
            argv += ["--seed", str(seed)]
        say(f"schemathesis for {max_time} s against {cluster.coordinator_url} ...")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=max_time + 300)
        return FuzzResult(done.returncode, done.stdout + done.stderr)
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
