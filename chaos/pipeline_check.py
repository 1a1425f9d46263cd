"""The pipeline's checker: every input event booked once and published once, and the
group's offsets at the end of the input with nothing skipped.

It reads what a user could: the input and the output topics as a ``read_committed``
consumer, the consumer group's committed offsets, and the ledger table in the bank's
database. Input events are the pipeline's order events (``{"id", "amount"}``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import orjson
import psycopg

from adapters.kafka.topics import committed_offsets, read_committed

__all__ = ["PipelineReport", "check_pipeline"]

#: Violations listed per kind at most (the counts are whole).
_SHOWN = 20


@dataclass
class PipelineReport:
    inputs: int = 0
    booked: int = 0
    published: int = 0
    #: ``(topic, partition) → (committed offset, end offset)`` for every input partition.
    offsets: dict[tuple[str, int], tuple[int | None, int]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    #: Input events not (yet) in the ledger or the output, and partitions whose committed
    #: offset is short of their end: what a pipeline still at work has yet to do.
    missing: int = 0
    behind: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def caught_up(self) -> bool:
        """Nothing left to do: whatever is still wrong (events twice) stays so."""
        return not self.missing and not self.behind


async def check_pipeline(
    bootstrap: str, input_topic: str, output_topic: str, group: str, ledger_dsn: str
) -> PipelineReport:
    """Hold the pipeline's effects against its input; call it once the pipeline is idle."""
    report = PipelineReport()
    inputs = await read_committed(bootstrap, [input_topic], settled=True)
    ids = Counter(_event_id(m.value) for m in inputs)
    report.inputs = len(inputs)
    repeated_inputs = sorted(i for i, n in ids.items() if n > 1)
    if repeated_inputs:
        report.violations.append(
            f"the input holds event ids more than once (a producer bug): {repeated_inputs[:_SHOWN]}"
        )

    ledger = await _ledger(ledger_dsn)
    report.booked = len(ledger)
    _compare(report, "ledger", ids, Counter({event: deliveries for event, deliveries in ledger.items()}))

    outputs = await read_committed(bootstrap, [output_topic], settled=True)
    published = Counter(m.key.decode() for m in outputs if m.key is not None)
    report.published = sum(published.values())
    _compare(report, "output topic", ids, published)

    ends: dict[tuple[str, int], int] = {}
    for message in inputs:
        place = (message.topic, message.partition)
        ends[place] = max(ends.get(place, 0), message.offset + 1)
    committed = await committed_offsets(bootstrap, group)
    for place, end in sorted(ends.items()):
        found = committed.get(place)
        offset = None if found is None else found.offset
        report.offsets[place] = (offset, end)
        # Past the last record there may be a transaction marker: at least the end.
        if offset is None or offset < end:
            report.behind += 1
            report.violations.append(
                f"group {group!r} committed {offset} for {place[0]}/{place[1]}, short of its end {end}: "
                "events there were skipped or are still unprocessed"
            )
    return report


def _compare(report: PipelineReport, where: str, expected: Counter[str], found: Counter[str]) -> None:
    missing = sorted(set(expected) - set(found))
    twice = sorted(event for event, count in found.items() if count > 1)
    strangers = sorted(set(found) - set(expected))
    report.missing += len(missing)
    if missing:
        report.violations.append(f"{len(missing)} input events are missing from the {where}: {missing[:_SHOWN]}")
    if twice:
        shown = [f"{event} x{found[event]}" for event in twice[:_SHOWN]]
        report.violations.append(f"{len(twice)} events took effect more than once in the {where}: {shown}")
    if strangers:
        report.violations.append(f"{len(strangers)} events in the {where} are not in the input: {strangers[:_SHOWN]}")


def _event_id(value: bytes | None) -> str:
    try:
        event = orjson.loads(value or b"")
        return str(event["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return f"unreadable:{(value or b'')[:40]!r}"


async def _ledger(dsn: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cursor = await conn.execute("SELECT event_id, deliveries FROM ledger")
        return {event: deliveries for event, deliveries in await cursor.fetchall()}
