"""A durable file-backed queue that takes part in global transactions.

Prepare stages a branch's ``{"items": [...]}`` in SQLite; commit appends them, in
order and exactly once, to the committed list that ``GET /queue/items`` serves. Faults
(vote no, delays, crashes, garbled answers) can be switched on at run time.
"""

from adapters.mockqueue.faults import Faults, FaultSwitch
from adapters.mockqueue.resource import MockQueueResource, validate_payload
from adapters.mockqueue.service import build_app, run
from adapters.mockqueue.store import QueueItem, QueueStore

__all__ = [
    "FaultSwitch",
    "Faults",
    "MockQueueResource",
    "QueueItem",
    "QueueStore",
    "build_app",
    "run",
    "validate_payload",
]
