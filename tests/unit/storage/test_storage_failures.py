"""The shared failure vocabulary and the outage retry every long-running loop uses."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import structlog
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from common.errors import SchemaMissing
from storage.archive.reader import ArchiveUnavailable
from storage.failures import (
    Abandoned,
    Backoff,
    DataFailure,
    FailureKind,
    failure_kind,
    retry_outages,
)
from storage.stream.contract import StreamUnavailable

FAST = Backoff(initial_s=0.001, max_s=0.004)


def _missing_table_error() -> OperationalError:
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        try:
            conn.execute(text("SELECT * FROM instances"))
        except OperationalError as exc:
            return exc
    raise AssertionError("the query should have failed")


def test_each_dependency_failure_has_one_kind() -> None:
    assert failure_kind(StreamUnavailable("broker down")) is FailureKind.OUTAGE
    assert failure_kind(ArchiveUnavailable("s3 down")) is FailureKind.OUTAGE
    assert (
        failure_kind(OperationalError("SELECT 1", {}, Exception("connection refused"))) is FailureKind.OUTAGE
    )
    assert failure_kind(IntegrityError("INSERT", {}, sqlite3.IntegrityError("x"))) is FailureKind.DATA
    assert failure_kind(OverflowError("int too large")) is FailureKind.DATA
    assert failure_kind(_missing_table_error()) is FailureKind.SCHEMA_MISSING
    assert failure_kind(KeyError("bug")) is FailureKind.OTHER


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = Backoff(initial_s=0.5, max_s=3.0).delays()
    assert [next(delays) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_the_wait_after_n_failures_is_the_nth_delay() -> None:
    """`after(n)` schedules a retry (an outbox row) with the waits the loop uses; no overflow."""
    backoff = Backoff(initial_s=5.0, max_s=600.0)
    delays = backoff.delays()
    assert [backoff.after(n) for n in range(1, 9)] == [next(delays) for _ in range(8)]
    assert [backoff.after(n) for n in (1, 2, 3, 8)] == [5.0, 10.0, 20.0, 600.0]
    assert backoff.after(100_000) == 600.0
    with pytest.raises(ValueError):
        backoff.after(0)


def test_an_outage_is_waited_out_and_each_retry_reported() -> None:
    calls: list[int] = []
    retried: list[BaseException] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StreamUnavailable("not yet")
        return "done"

    result = retry_outages(
        flaky, what="publish", stop=threading.Event(), backoff=FAST, on_retry=retried.append
    )
    assert result == "done"
    assert len(calls) == 3
    assert [type(e) for e in retried] == [StreamUnavailable, StreamUnavailable]


def test_a_quiet_retry_logs_an_outage_once_and_its_end() -> None:
    """`log_each_retry=False`: one line when the outage starts, one when it ends, whatever the attempts."""
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 5:
            raise StreamUnavailable("not yet")
        return "done"

    with structlog.testing.capture_logs() as logs:
        retry_outages(flaky, what="poll", stop=threading.Event(), backoff=FAST, log_each_retry=False)
    assert [(e["event"], e.get("attempt", e.get("attempts"))) for e in logs] == [
        ("dependency_unavailable", 1),
        ("dependency_recovered", 5),
    ]


def test_a_stop_during_an_outage_abandons_the_action() -> None:
    stop = threading.Event()
    stop.set()

    def down() -> None:
        raise StreamUnavailable("down")

    with pytest.raises(Abandoned):
        retry_outages(down, what="commit", stop=stop, backoff=FAST)


def test_data_and_schema_failures_are_not_retried() -> None:
    calls: list[int] = []

    def bad_value() -> None:
        calls.append(1)
        raise OverflowError("int too large")

    with pytest.raises(DataFailure):
        retry_outages(bad_value, what="write", stop=threading.Event(), backoff=FAST)
    missing = _missing_table_error()

    def no_schema() -> None:
        calls.append(1)
        raise missing

    with pytest.raises(SchemaMissing):
        retry_outages(no_schema, what="write", stop=threading.Event(), backoff=FAST)
    assert len(calls) == 2


def test_a_bug_propagates_unchanged() -> None:
    def bug() -> None:
        raise KeyError("not a dependency failure")

    with pytest.raises(KeyError):
        retry_outages(bug, what="write", stop=threading.Event(), backoff=FAST)
