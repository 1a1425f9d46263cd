"""twopc: a two-phase-commit coordinator, participant SDK and resource adapters.

This package holds what the coordinator and the participants share: the wire
protocol, failpoints, clocks and the command line. The coordinator lives in
``coordinator``, the SDK in ``participant_sdk`` and the resources in ``adapters``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
