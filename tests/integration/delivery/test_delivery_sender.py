"""The result sender against a real database (SQLite and PostgreSQL) and real DICOM peers: a
pynetdicom storage SCP as the destination, or a port where nothing listens."""

from __future__ import annotations

import datetime as dt
import io
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from ingest_support import make_certificates
from prometheus_client import CollectorRegistry
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs

from common.errors import SchemaMissing
from delivery.destinations import make_client_tls_context
from delivery.metrics import SenderMetrics
from delivery.scu import StoreOptions, store_all
from delivery.sender import ResultSender, SenderConfig
from ingest.ae import make_tls_context
from storage.db.engine import make_engine, make_session_factory
from storage.db.outbox import NewObject, add_report
from storage.db.tables import ModelVersion, Study, StudyPrediction

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def sessions(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(migrated_database_url)
    yield make_session_factory(engine)
    engine.dispose()


class StorageSCP:
    """A real C-STORE destination on a free port that keeps what it receives."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.received: list[str] = []
        self.on_received: Callable[[], None] = lambda: None  # a test's hook (a clock that moves)
        ae = AE(ae_title="PACS")
        ae.add_supported_context(CTImageStorage)
        self._server = ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
            ssl_context=ssl_context,
        )
        self.port = self._server.server_address[1]

    def _on_store(self, event: evt.Event) -> int:
        self.received.append(str(event.dataset.SOPInstanceUID))
        self.on_received()
        return 0x0000

    def stop(self) -> None:
        self._server.shutdown()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _queue_result(sessions: sessionmaker[Session], destinations: list[str]) -> str:
    """A completed study with one report whose object (a real CT instance) waits for `destinations`."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    with sessions.begin() as session:
        study = Study(study_instance_uid="1.2.3.4", first_received_at=T0, last_received_at=T0)
        version = ModelVersion(
            version="v1",
            artifact_uri="/x",
            sha256="0" * 64,
            card={},
            metrics={},
            status="active",
            created_at=T0,
        )
        session.add_all([study, version])
        session.flush()
        probabilities = {"p_cyst": 0.1, "p_normal": 0.9, "p_stone": 0.1, "p_tumor": 0.1}
        counts = {"n_cyst": 0, "n_normal": 1, "n_stone": 0, "n_tumor": 0}
        session.add(
            StudyPrediction(
                study_id=study.id,
                model_version_id=version.id,
                label="Normal",
                n_instances=1,
                complete=True,
                updated_at=T0,
                **probabilities,
                **counts,
            )
        )
        add_report(
            session,
            study_id=study.id,
            model_version_id=version.id,
            revision=1,
            label="Normal",
            key_slices=[],
            objects=[NewObject("sr", str(ds.SOPClassUID), str(ds.SOPInstanceUID), buffer.getvalue())],
            destinations=destinations,
            build_error=None,
            now=T0,
        )
    return str(ds.SOPInstanceUID)


def _sender(
    sessions: sessionmaker[Session], clock: Clock, tls: ssl.SSLContext | None = None, **config: object
) -> tuple[ResultSender, SenderMetrics]:
    metrics = SenderMetrics(CollectorRegistry())
    options = StoreOptions(
        calling_ae="KIDNEYCT", tls=tls, acse_timeout_s=5, dimse_timeout_s=5, network_timeout_s=5
    )
    cfg = SenderConfig(store=options, **config)  # type: ignore[arg-type]
    return ResultSender(sessions=sessions, config=cfg, metrics=metrics, utcnow=clock), metrics


def _delivery_state(sessions: sessionmaker[Session]) -> str | None:
    with sessions() as session:
        return session.execute(text("SELECT delivery_state FROM study_results")).scalar_one()


def test_a_result_is_stored_by_the_destination_and_marked_delivered(sessions: sessionmaker[Session]) -> None:
    """One C-STORE, the row `delivered`, the view says so, the metric counts it."""
    scp = StorageSCP()
    try:
        uid = _queue_result(sessions, [f"PACS@127.0.0.1:{scp.port}"])
        assert _delivery_state(sessions) == "pending"
        sender, metrics = _sender(sessions, Clock())
        assert sender.send_due() == 1
        assert scp.received == [uid]
        assert _delivery_state(sessions) == "delivered"
        assert metrics.delivered.labels(kind="sr")._value.get() == 1
        assert sender.send_due() == 0  # nothing is sent twice
    finally:
        scp.stop()


def test_an_unreachable_destination_is_retried_with_backoff_then_marked_failed(
    sessions: sessionmaker[Session],
) -> None:
    """Not due before its backoff; after the last attempt `failed`, in SQL and in the metrics."""
    _queue_result(sessions, [f"PACS@127.0.0.1:{_closed_port()}"])
    clock = Clock()
    sender, metrics = _sender(sessions, clock, max_attempts=3, retry_initial_s=10, retry_max_s=15)
    assert sender.send_due() == 1
    with sessions() as session:
        attempts, state, due, error = session.execute(
            text("SELECT attempts, state, next_attempt_at, last_error FROM result_deliveries")
        ).one()
    assert (attempts, state) == (1, "pending") and error
    assert sender.send_due() == 0  # waits for its backoff
    clock.now += dt.timedelta(seconds=10)
    assert sender.send_due() == 1
    clock.now += dt.timedelta(seconds=15)  # 20 s capped at 15 s
    assert sender.send_due() == 1
    with sessions() as session:
        attempts, state = session.execute(text("SELECT attempts, state FROM result_deliveries")).one()
    assert (attempts, state) == (3, "failed")
    assert _delivery_state(sessions) == "failed"
    assert metrics.failed._value.get() == 1 and metrics.attempts_failed._value.get() == 3
    assert metrics.outbox.labels(state="failed")._value.get() == 1
    clock.now += dt.timedelta(days=1)
    assert sender.send_due() == 0  # failed for good


def test_a_claimed_delivery_waits_for_its_lease_before_another_sender_takes_it(
    sessions: sessionmaker[Session],
) -> None:
    """A sender that dies after claiming leaves the row to whoever comes after the lease, never before."""
    scp = StorageSCP()
    try:
        uid = _queue_result(sessions, [f"PACS@127.0.0.1:{scp.port}"])
        clock = Clock()
        first, _ = _sender(sessions, clock, lease_s=60)
        assert len(first._claim()) == 1  # ...and then it is killed
        second, _ = _sender(sessions, clock, lease_s=60)
        assert second.send_due() == 0
        clock.now += dt.timedelta(seconds=61)
        assert second.send_due() == 1
        assert scp.received == [uid] and _delivery_state(sessions) == "delivered"
    finally:
        scp.stop()


def test_run_stops_when_asked(sessions: sessionmaker[Session]) -> None:
    """`run` returns promptly after stop is set (the serve and send-results shutdown path)."""
    sender, _ = _sender(sessions, Clock(), poll_s=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,))
    thread.start()
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_a_tls_destination_gets_the_result_only_from_a_sender_with_a_trusted_certificate(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """TLS like the listener's: the destination's certificate is checked against our CA, and one
    that asks for a client certificate gets ours; without it the attempt fails and is retried."""
    certs = make_certificates(tmp_path / "tls")
    server = make_tls_context(cert=certs.server_cert, key=certs.server_key, ca=certs.ca)
    scp = StorageSCP(ssl_context=server)
    try:
        uid = _queue_result(sessions, [f"PACS@127.0.0.1:{scp.port}"])
        clock = Clock()
        anonymous = make_client_tls_context(ca=certs.ca, cert=None, key=None)
        sender, _ = _sender(sessions, clock, tls=anonymous, retry_initial_s=1)
        assert sender.send_due() == 1
        assert scp.received == [] and _delivery_state(sessions) == "pending"
        ours = make_client_tls_context(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
        sender, _ = _sender(sessions, clock, tls=ours)
        clock.now += dt.timedelta(seconds=1)
        assert sender.send_due() == 1
        assert scp.received == [uid] and _delivery_state(sessions) == "delivered"
    finally:
        scp.stop()


def _queue_objects(sessions: sessionmaker[Session], destination: str, n: int) -> list[str]:
    """A completed study's report with `n` objects (CT instances under new UIDs) for `destination`."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    objects = []
    for _ in range(n):
        ds.SOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        objects.append(NewObject("sr", str(ds.SOPClassUID), str(ds.SOPInstanceUID), buffer.getvalue()))
    with sessions.begin() as session:
        study = Study(study_instance_uid="1.2.3.5", first_received_at=T0, last_received_at=T0)
        version = ModelVersion(
            version="v1",
            artifact_uri="/x",
            sha256="0" * 64,
            card={},
            metrics={},
            status="active",
            created_at=T0,
        )
        session.add_all([study, version])
        session.flush()
        add_report(
            session,
            study_id=study.id,
            model_version_id=version.id,
            revision=1,
            label="Normal",
            key_slices=[],
            objects=objects,
            destinations=[destination],
            build_error=None,
            now=T0,
        )
    return [o.sop_instance_uid for o in objects]


class Killed(Exception):
    """Stands for SIGKILL: the sender stops between the PACS's answers and anything after them."""


def _states(sessions: sessionmaker[Session]) -> list[tuple[str, int]]:
    with sessions() as session:
        rows = session.execute(text("SELECT state, attempts FROM result_deliveries ORDER BY id")).all()
    return [(str(s), int(a)) for s, a in rows]


def test_a_sender_killed_after_its_c_stores_re_sends_nothing_the_pacs_acknowledged(
    sessions: sessionmaker[Session],
) -> None:
    """Each outcome is committed when the PACS answers: a kill after a round's C-STOREs leaves them
    delivered, and the sender that comes after the lease sends nothing twice (issue 23, item 9)."""
    scp = StorageSCP()
    try:
        uids = _queue_objects(sessions, f"PACS@127.0.0.1:{scp.port}", 3)
        clock = Clock()

        def store_then_die(*args: object, **kwargs: object) -> dict[int, str | None]:
            store_all(*args, **kwargs)  # type: ignore[arg-type]
            raise Killed

        first = ResultSender(
            sessions=sessions,
            config=SenderConfig(store=StoreOptions(calling_ae="KIDNEYCT"), lease_s=60),
            metrics=SenderMetrics(CollectorRegistry()),
            store=store_then_die,
            utcnow=clock,
        )
        with pytest.raises(Killed):
            first.send_due()
        assert sorted(scp.received) == sorted(uids)
        clock.now += dt.timedelta(seconds=61)
        second, _ = _sender(sessions, clock, lease_s=60)
        assert second.send_due() == 0
        assert sorted(scp.received) == sorted(uids)  # each SR reached the PACS once
        assert _states(sessions) == [("delivered", 1)] * 3
    finally:
        scp.stop()


def test_a_delivery_whose_lease_ran_out_during_a_long_round_is_not_sent_by_that_round(
    sessions: sessionmaker[Session],
) -> None:
    """Each C-STORE renews its delivery's lease first; a slow PACS makes the third delivery's lease
    run out before its turn: that round does not send it, the next one does, and says it took it over
    only when another sender's lease ran out."""
    clock = Clock()
    scp = StorageSCP()
    scp.on_received = lambda: setattr(clock, "now", clock.now + dt.timedelta(seconds=40))
    try:
        uids = _queue_objects(sessions, f"PACS@127.0.0.1:{scp.port}", 3)
        sender, _ = _sender(sessions, clock, lease_s=60)
        with capture_logs() as logs:
            assert sender.send_due() == 3
        assert scp.received == uids[:2]  # at T0 and T0+40 s; the third's lease ended at T0+60 s
        assert [e["sop_instance_uid"] for e in logs if e["event"] == "result_delivery_lease_ran_out"] == [
            uids[2]
        ]
        assert _states(sessions) == [("delivered", 1), ("delivered", 1), ("pending", 0)]
        with capture_logs() as logs:
            assert sender.send_due() == 1  # given back: due at once, no attempt counted
        assert scp.received == uids
        assert not [e for e in logs if e["event"] == "result_delivery_taken_over"]
    finally:
        scp.stop()


def test_a_delivery_left_by_a_killed_sender_is_taken_over_and_said_so(
    sessions: sessionmaker[Session],
) -> None:
    """While the lease of a killed sender runs, a new sender says what waits; after it, the delivery is
    taken over with a log line naming it."""
    scp = StorageSCP()
    try:
        uid = _queue_result(sessions, [f"PACS@127.0.0.1:{scp.port}"])
        clock = Clock()
        first, _ = _sender(sessions, clock, lease_s=60)
        assert len(first._claim()) == 1  # ...and then it is killed
        second, _ = _sender(sessions, clock, lease_s=60, poll_s=0.01)
        stop = threading.Event()
        with capture_logs() as logs:
            stop.set()
            second.run(stop)  # starts, reports, stops at once
            clock.now += dt.timedelta(seconds=61)
            assert second.send_due() == 1
        events = {e["event"]: e for e in logs}
        assert events["result_deliveries_leased"]["count"] == 1
        assert events["result_delivery_taken_over"]["sop_instance_uid"] == uid
        assert scp.received == [uid]
    finally:
        scp.stop()


def test_a_sender_whose_lease_ran_out_leaves_the_delivery_to_the_one_that_took_it_over(
    sessions: sessionmaker[Session],
) -> None:
    """The first sender's renewal fails once another sender claimed the row after the first lease
    ended, and it does not touch the second sender's lease."""
    _queue_result(sessions, [f"PACS@127.0.0.1:{_closed_port()}"])
    clock = Clock()
    first, _ = _sender(sessions, clock, lease_s=60)
    (stale,) = first._claim()
    clock.now += dt.timedelta(seconds=61)
    second, _ = _sender(sessions, clock, lease_s=60)
    (taken,) = second._claim()
    assert taken.abandoned_lease == stale.lease_ends
    with capture_logs() as logs:
        assert first._renew(stale) is False
    assert [e["event"] for e in logs] == ["result_delivery_lease_ran_out"]
    with sessions() as session:
        until = session.execute(text("SELECT claimed_until FROM result_deliveries")).scalar_one()
    assert until is not None and _utc(until) == taken.lease_ends


def _utc(value: object) -> dt.datetime:
    if isinstance(value, str):  # SQLite through a text() query
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def test_a_database_outage_is_waited_out_with_one_line_until_stopped() -> None:
    """PostgreSQL refusing connections (nothing listens on its port): the sender keeps waiting,
    logs the outage once however many attempts, and stops promptly when asked."""
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/kidneyct")
    sender, _ = _sender(make_session_factory(engine), Clock(), poll_s=0.05)
    stop = threading.Event()
    with capture_logs() as logs:
        thread = threading.Thread(target=sender.run, args=(stop,))
        thread.start()
        stop.wait(2.5)  # attempts after 0.5, 1 and 2 s
        assert thread.is_alive()
        stop.set()
        thread.join(timeout=10)
    engine.dispose()
    assert not thread.is_alive()
    outage = [e for e in logs if e.get("action") == "send_results"]
    assert [(e["event"], e["attempt"]) for e in outage] == [("dependency_unavailable", 1)]
    assert logs[-1]["event"] == "result_sender_stopped"


def test_a_database_without_the_schema_stops_the_sender(sqlite_url: str) -> None:
    """Not migrated: `SchemaMissing` (`kidneyct db upgrade`) at once, not a wait that never ends."""
    engine = make_engine(sqlite_url)
    sender, _ = _sender(make_session_factory(engine), Clock(), poll_s=0.05)
    try:
        with pytest.raises(SchemaMissing):
            sender.run(threading.Event())
    finally:
        engine.dispose()
