"""Global transaction ids of PostgreSQL branches: ``{prefix}{gtid}:{branch}``.

The prefix names the participant (``twopc:{participant}:`` by default), so recovery
finds its own prepared transactions in ``pg_prepared_xacts`` by prefix (and database)
and never touches anyone else's. The gid is passed to psycopg as a plain string, which
PostgreSQL stores as it is (psycopg only rewrites XA triples, ``{format}_{b64}_{b64}``,
which a prefix not starting with a digit can never look like).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from twopc_core.protocol import GTID_PATTERN, NAME_PATTERN

__all__ = ["MAX_GID_LENGTH", "GidScheme"]

#: PostgreSQL's GIDSIZE is 200 bytes including the terminating NUL.
MAX_GID_LENGTH = 199
_PREFIX = re.compile(r"^[A-Za-z][\x21-\x7e]{0,99}$")
_GTID = re.compile(GTID_PATTERN)
_BRANCH = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class GidScheme:
    prefix: str

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.prefix) or "'" in self.prefix:
            raise ValueError(
                f"gid prefix {self.prefix!r} must start with a letter and be printable ASCII "
                "without spaces or quotes, at most 100 characters"
            )

    @classmethod
    def for_participant(cls, participant: str) -> GidScheme:
        return cls(f"twopc:{participant}:")

    def gid(self, gtid: str, branch: str) -> str:
        if not _GTID.match(gtid):
            raise ValueError(f"gtid {gtid!r} does not match {GTID_PATTERN}")
        if not _BRANCH.match(branch):
            raise ValueError(f"branch {branch!r} does not match {NAME_PATTERN}")
        gid = f"{self.prefix}{gtid}:{branch}"
        if len(gid) > MAX_GID_LENGTH:
            raise ValueError(f"gid {gid!r} is longer than PostgreSQL's {MAX_GID_LENGTH} characters")
        return gid

    def owns(self, gid: str) -> bool:
        return self.parse(gid) is not None

    def parse(self, gid: str) -> tuple[str, str] | None:
        """``(gtid, branch)`` of a gid made by this scheme, else None."""
        if not gid.startswith(self.prefix):
            return None
        gtid, sep, branch = gid[len(self.prefix) :].partition(":")
        if not sep or not _GTID.match(gtid) or not _BRANCH.match(branch):
            return None
        return gtid, branch
