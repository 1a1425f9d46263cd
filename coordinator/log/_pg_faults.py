"""What a fault of the PostgreSQL log's database means, and what to tell a person about it.

A fault is either *transient* — the server is away, restarting, failing over, or asked
us to retry (serialization failure, deadlock) — after which the same statements may
simply be sent again, or it is an answer that will not change by asking again (a
missing right, a constraint the data breaks).
"""

from __future__ import annotations

import re

import psycopg
from psycopg import errors

__all__ = ["connect_failure", "is_transient", "reason"]

#: Answers worth retrying that psycopg does not class as operational: a server that
#: became read-only (a primary demoted during a failover) and a session the server
#: ended because it sat in a transaction too long.
_TRANSIENT_STATES = frozenset({"25006", "25P03"})


def is_transient(exc: BaseException) -> bool:
    """Whether sending the same statements again may succeed: the connection failed or
    timed out, the server is shutting down or starting, or it asked for a retry
    (40001 serialization failure, 40P01 deadlock: both ``OperationalError``)."""
    if isinstance(exc, TimeoutError | OSError | psycopg.OperationalError):
        return True
    return isinstance(exc, psycopg.Error) and exc.sqlstate in _TRANSIENT_STATES


def reason(exc: BaseException) -> str:
    """The first line of what the driver or the server said, without psycopg's prefix."""
    text = str(exc).strip() or type(exc).__name__
    text = re.sub(r"^connection (failed|is bad): ", "", text)
    line = text.splitlines()[0].strip()
    return re.sub(r"\s+", " ", line.replace("FATAL:", "").strip())


def connect_failure(exc: BaseException) -> str:
    """A message a person can act on, for a first connection to the log that failed."""
    why = reason(exc)
    if isinstance(exc, psycopg.ProgrammingError) and not isinstance(exc, errors.InsufficientPrivilege):
        return f"log.dsn is not a valid PostgreSQL connection string ({why})"
    if re.search(r'database ".*" does not exist', why):
        return (
            f"the decision log's database does not exist ({why}): create it, for example with "
            "`createdb -O <role> <name>`, or fix the database name in log.dsn"
        )
    if re.search(r'role ".*" does not exist|authentication failed|no pg_hba\.conf entry|password', why):
        return (
            f"the decision log's PostgreSQL server refused the role ({why}): check the user and the "
            "password in log.dsn, and the server's pg_hba.conf"
        )
    return (
        f"the decision log's PostgreSQL server cannot be reached ({why}): check the host and port in "
        "log.dsn, and that the server is running and accepts connections"
    )
