"""What the PostgreSQL log makes of a database's faults: which ones to retry, and what a
person is told when the first connection fails."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from coordinator.log._pg_faults import connect_failure, is_transient


@pytest.mark.parametrize(
    ("server_said", "hint"),
    [
        ('connection to server at "db", port 5432 failed: FATAL:  role "nobody" does not exist', "refused the role"),
        (
            'connection to server at "db", port 5432 failed: FATAL:  password authentication failed for user "t"',
            "check the user and the password",
        ),
        (
            'connection to server at "db", port 5432 failed: FATAL:  no pg_hba.conf entry for host "10.0.0.1"',
            "pg_hba.conf",
        ),
        ('connection to server at "db", port 5432 failed: FATAL:  database "x" does not exist', "createdb"),
        ('connection to server at "db", port 5432 failed: timeout expired', "cannot be reached"),
    ],
    ids=["unknown role", "wrong password", "host not allowed", "missing database", "no answer"],
)
def test_a_failed_first_connection_is_told_with_what_to_check(server_said: str, hint: str) -> None:
    message = connect_failure(psycopg.OperationalError(f"connection failed: {server_said}"))
    assert hint in message
    assert "FATAL" not in message and "connection failed:" not in message


@pytest.mark.parametrize(
    "fault",
    [
        errors.SerializationFailure("could not serialize access"),
        errors.DeadlockDetected("deadlock detected"),
        errors.AdminShutdown("terminating connection due to administrator command"),
        errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        TimeoutError(),
    ],
    ids=lambda fault: type(fault).__name__,
)
def test_faults_that_may_pass_are_retried(fault: BaseException) -> None:
    assert is_transient(fault)


@pytest.mark.parametrize(
    "fault",
    [
        errors.UniqueViolation("duplicate key value"),
        errors.InsufficientPrivilege("permission denied for table twopc_transactions"),
        errors.UndefinedTable("relation does not exist"),
    ],
    ids=lambda fault: type(fault).__name__,
)
def test_answers_that_asking_again_cannot_change_are_not_retried(fault: BaseException) -> None:
    assert not is_transient(fault)
