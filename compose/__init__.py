"""The whole system composed: the Docker Compose stack, and its local twin.

The twin runs the same system as real processes on loopback, for tests, chaos runs,
the benchmark and ``twopc demo``: the development PostgreSQL and Kafka
(:mod:`compose.dev`), the process supervisor and the local cluster. It starts twopc's
services by their commands (``twopc serve``, ``twopc mockqueue serve``, ...) and imports
none of them.
"""

__all__: list[str] = []
