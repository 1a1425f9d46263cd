"""The shared core: what the coordinator, the participant SDK and the adapters all use.

The participant protocol's messages (:mod:`twopc_core.protocol`), request signatures,
failpoints, group commit for SQLite logs, telemetry, the HTTP edge, how services run,
and testing tools. It imports no other twopc package: every layer stands on it.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
