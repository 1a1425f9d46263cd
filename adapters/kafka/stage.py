"""The stage topic's records, and the state they add up to.

Every record of one branch goes to the partition of its shard. Keys are text:

- ``{branch}/{gtid}/{i}``: chunk ``i`` of the branch's staged messages and offsets (the
  bytes of :func:`adapters.kafka.messages.encode_branch`, cut into pieces of at most the chunk
  size, so a large batch never makes a record the broker would refuse). Headers
  ``twopc-chunks`` (how many) and ``twopc-digest`` (SHA-256 of the whole) ride along.
- ``{branch}/{gtid}``: the branch's marker, JSON ``{"state": "committed"|"aborted",
  "at": unix seconds, "chunks": n}``, written in the same Kafka transaction as the
  tombstones of its chunks (and, for a commit, as the published messages).
- a tombstone of the marker forgets the branch.

Neither a gtid nor a participant name can hold a ``/``, so keys never collide. The
topic is compacted: what stays is, per branch, its chunks while it is prepared, then
its marker only.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from adapters.kafka.messages import OutgoingMessage, decode_branch
from adapters.kafka.offsets import GroupOffsets

__all__ = [
    "BranchEntry",
    "StageEntryState",
    "StageFold",
    "StageRecord",
    "chunk_records",
    "digest_of",
    "marker_record",
    "parse_key",
    "tombstone",
]

Headers = tuple[tuple[str, bytes], ...]


class StageEntryState(enum.StrEnum):
    """The state of a branch's entry in the stage topic, as its records add up to."""

    PREPARED = "prepared"
    COMMITTED = "committed"
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True)
class StageRecord:
    key: bytes
    value: bytes | None
    headers: Headers = ()


@dataclass(slots=True)
class BranchEntry:
    """What the stage says of one branch. ``messages`` and ``offsets`` are kept while it
    is prepared."""

    gtid: str
    branch: str
    state: StageEntryState
    digest: str
    chunks: int
    at: float
    messages: list[OutgoingMessage] | None = None
    offsets: GroupOffsets | None = None


def digest_of(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def _key(branch: str, gtid: str, chunk: int | None = None) -> bytes:
    return f"{branch}/{gtid}".encode() if chunk is None else f"{branch}/{gtid}/{chunk}".encode()


def parse_key(key: bytes | None) -> tuple[str, str, int | None] | None:
    """``(branch, gtid, chunk or None)`` of a stage key; None for a key not ours."""
    if key is None:
        return None
    parts = key.decode("utf-8", errors="replace").split("/")
    if len(parts) == 2:
        return parts[0], parts[1], None
    if len(parts) == 3 and parts[2].isdigit():
        return parts[0], parts[1], int(parts[2])
    return None


def chunk_records(branch: str, gtid: str, blob: bytes, chunk_bytes: int) -> list[StageRecord]:
    """The records that stage ``blob`` for the branch, each value at most ``chunk_bytes``."""
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    pieces = [blob[start : start + chunk_bytes] for start in range(0, len(blob), chunk_bytes)] or [b""]
    headers = (("twopc-chunks", str(len(pieces)).encode()), ("twopc-digest", digest_of(blob).encode()))
    return [StageRecord(_key(branch, gtid, index), piece, headers) for index, piece in enumerate(pieces)]


def marker_record(branch: str, gtid: str, state: StageEntryState, at: float, chunks: int) -> StageRecord:
    value = orjson.dumps({"state": state.value, "at": at, "chunks": chunks})
    return StageRecord(_key(branch, gtid), value)


def tombstone(branch: str, gtid: str, chunk: int | None = None) -> StageRecord:
    return StageRecord(_key(branch, gtid, chunk), None)


@dataclass
class _Pending:
    chunks: dict[int, bytes] = field(default_factory=dict)
    total: int = 0
    digest: str = ""
    at: float = 0.0


class StageFold:
    """Adds up a stage partition's records, read in order, into one :class:`BranchEntry`
    per branch of ``branch_name`` (records of other names are skipped).

    ``problems`` lists what could not be read (a record that is not ours, chunks that do
    not add up); such a branch is left out rather than guessed at.
    """

    def __init__(self, branch_name: str) -> None:
        self.branch_name = branch_name
        self.entries: dict[tuple[str, str], BranchEntry] = {}
        self.problems: list[str] = []
        self._pending: dict[tuple[str, str], _Pending] = {}

    def add(
        self, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]], timestamp: float
    ) -> None:
        parsed = parse_key(key)
        if parsed is None:
            self.problems.append(f"record with a key that is not a stage key: {key!r}")
            return
        branch, gtid, chunk = parsed
        if branch != self.branch_name:
            return
        ident = (gtid, branch)
        if chunk is not None:
            self._add_chunk(ident, chunk, value, dict(headers), timestamp)
        elif value is None:
            self.entries.pop(ident, None)
            self._pending.pop(ident, None)
        else:
            self._add_marker(ident, value)

    def _add_chunk(
        self, ident: tuple[str, str], chunk: int, value: bytes | None, headers: dict[str, bytes], at: float
    ) -> None:
        if value is None:  # the chunks' tombstones follow a marker: nothing left to assemble
            pending = self._pending.get(ident)
            if pending is not None:
                pending.chunks.pop(chunk, None)
                if not pending.chunks:
                    del self._pending[ident]
            return
        pending = self._pending.setdefault(ident, _Pending())
        try:
            pending.total = int(headers["twopc-chunks"])
            pending.digest = headers["twopc-digest"].decode()
        except (KeyError, ValueError):
            self.problems.append(f"chunk {chunk} of {ident[1]}/{ident[0]} lacks its headers")
            return
        pending.chunks[chunk] = value
        pending.at = at

    def _add_marker(self, ident: tuple[str, str], value: bytes) -> None:
        gtid, branch = ident
        try:
            marker = orjson.loads(value)
            state = StageEntryState(marker["state"])
            at, chunks = float(marker["at"]), int(marker.get("chunks", 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.problems.append(f"unreadable marker of {branch}/{gtid}: {value[:100]!r}")
            return
        self._pending.pop(ident, None)
        digest = self.entries[ident].digest if ident in self.entries else ""
        self.entries[ident] = BranchEntry(gtid, branch, state, digest, chunks, at)

    def finish(self) -> dict[tuple[str, str], BranchEntry]:
        """The entries, with every fully staged branch that has no marker as prepared."""
        for ident, pending in self._pending.items():
            if ident in self.entries:
                continue
            gtid, branch = ident
            if sorted(pending.chunks) != list(range(pending.total)):
                self.problems.append(f"staged messages of {branch}/{gtid} are incomplete: left out")
                continue
            blob = b"".join(pending.chunks[i] for i in range(pending.total))
            if digest_of(blob) != pending.digest:
                self.problems.append(f"staged messages of {branch}/{gtid} do not match their digest: left out")
                continue
            try:
                staged = decode_branch(blob)
            except ValueError as exc:
                self.problems.append(f"{branch}/{gtid}: {exc}")
                continue
            self.entries[ident] = BranchEntry(
                gtid,
                branch,
                StageEntryState.PREPARED,
                pending.digest,
                pending.total,
                pending.at,
                staged.messages,
                staged.offsets,
            )
        self._pending.clear()
        return self.entries
