"""A workload's cluster on another version's code: a version that refuses this
checkout's configuration ends the run with what it said, not a stack trace."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools.bench._code import ServiceCode
from tools.bench._coordinators import Coordinators
from tools.bench._git import Commit
from tools.bench._mock import MockWorkload
from tools.bench._resources import BenchSetupError

#: A twopc whose --help takes every option, and whose services refuse to start.
_REFUSING_TWOPC = """
import sys
if "--help" in sys.argv:
    print("--config --name --port --data --coordinator --secret --inquiry-interval")
else:
    sys.exit("twopc: invalid configuration: auth: Extra inputs are not permitted")
"""


async def test_services_of_a_ref_that_do_not_start_are_a_clear_error_quoting_their_log(tmp_path: Path) -> None:
    commit = Commit("old", "0" * 40, "0000000")
    code = ServiceCode(commit.label, (sys.executable, "-c", _REFUSING_TWOPC), commit=commit)
    load = MockWorkload(tmp_path, 1, coordinators=Coordinators(code=code))

    with pytest.raises(BenchSetupError) as refused:
        await load.start(progress=lambda line: None)

    message = str(refused.value)
    assert message.startswith("old (0000000)'s services did not start as this checkout's bench configures them")
    assert "invalid configuration: auth: Extra inputs are not permitted" in message
    assert "; see " not in message  # the log is quoted, not pointed at
    assert load.cluster is not None and not any(node.running for node in load.cluster.nodes.values())
