"""The ``twopc`` command line: serve, participants, transactions, the demo, chaos, bench.

It needs the ``cli`` extra (typer, rich, matplotlib); without it, ``twopc`` says which
package to install instead of failing with a traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

#: What the command itself needs, beyond the core install.
_CLI_PACKAGES = frozenset({"typer", "click", "rich", "matplotlib"})


def main() -> None:
    try:
        from tools.cli._app import app
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _CLI_PACKAGES:
            raise
        sys.exit(f"twopc: the command line needs the cli extra: pip install 'twopc[cli]' ({exc.name} is missing)")
    app()
