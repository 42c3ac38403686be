"""Every socket is closed by its deadline, one host cannot take every place, and no request leaves
a temporary file (docs/conformance.md, 3.2.1.2; loopback, deadlines of seconds)."""

from __future__ import annotations

import contextlib
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ingest_support import (
    LOCALHOST,
    OUR_AE,
    MemoryPublisher,
    listener_settings,
    running_listener,
    send_files,
    synthetic_ct,
)
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_messages import C_ECHO_RQ
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification
from structlog.testing import capture_logs

from fuzz import datasets, slowloris, wire
from ingest import statuses

# A second loopback address: another host, as far as the listener's per-peer limits can tell.
OTHER_HOST = "127.0.0.2"
SLACK_S = slowloris.SLACK_S


def _good_file(tmp_path: Path) -> Path:
    return synthetic_ct(
        tmp_path / f"good-{generate_uid()}.dcm", study_uid=generate_uid(), series_uid=generate_uid(), number=1
    )


def _server_side_open(listener_port: int, client: socket.socket) -> bool:
    """Whether the listener still holds a file descriptor for `client`'s connection: its end is
    listed in /proc/net/tcp with a non-zero inode (a closed, orphaned socket has inode 0)."""
    client_port = client.getsockname()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == listener_port and remote_port == client_port and fields[9] != "0":
            return True
    return False


def _wait_until(condition: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return bool(callable(condition) and condition())


@contextlib.contextmanager
def _temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Where pynetdicom writes received datasets, for this test only."""
    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    yield directory


def test_pdata_trickled_byte_by_byte_is_closed_at_the_pdu_deadline(tmp_path: Path) -> None:
    """A P-DATA whose bytes come one per 0.25 s: A-ABORT and the socket closed (file descriptor
    released) by the network timeout after its first byte, however long the peer goes on."""
    settings = listener_settings(tmp_path / "archive", network_timeout_s=2.0, dimse_timeout_s=30.0)
    with (
        running_listener(settings, MemoryPublisher()) as (listener, _m),
        capture_logs() as logs,
        contextlib.closing(slowloris.associated(listener.port)) as sock,
    ):
        body = struct.pack(">L", 1002) + bytes([slowloris.CONTEXT_ID, 0x00])
        sock.sendall(wire.pdu_header(0x04, len(body) + 1000) + body)
        closure = slowloris.trickle_until_closed(sock, bytes(1000), give_up_s=10)
        assert closure.answer == "ABORT"
        assert closure.closed_after_s is not None and closure.closed_after_s <= 2.0 + SLACK_S
        assert _wait_until(lambda: not _server_side_open(listener.port, sock), 2.0)
    assert any(e.get("reason") == "pdu_read_timeout" for e in logs)


def test_silent_association_is_closed_at_the_network_timeout(tmp_path: Path) -> None:
    """A valid association that sends nothing more is aborted and its socket closed."""
    settings = listener_settings(tmp_path / "archive", network_timeout_s=2.0)
    with (
        running_listener(settings, MemoryPublisher()) as (listener, _m),
        contextlib.closing(slowloris.associated(listener.port)) as sock,
    ):
        closure = slowloris.trickle_until_closed(sock, b"", give_up_s=10)
        assert closure.answer == "ABORT"
        assert closure.closed_after_s is not None and closure.closed_after_s <= 2.0 + SLACK_S
        assert _wait_until(lambda: not _server_side_open(listener.port, sock), 2.0)


def test_half_sent_associate_request_is_closed_at_the_establish_deadline(tmp_path: Path) -> None:
    """Half an A-ASSOCIATE-RQ, then the rest one byte per 0.25 s: closed at the deadline."""
    settings = listener_settings(tmp_path / "archive", association_establish_timeout_s=1.0)
    with (
        running_listener(settings, MemoryPublisher()) as (listener, _m),
        contextlib.closing(slowloris.connect(listener.port)) as sock,
    ):
        request = slowloris.associate_rq()
        sock.sendall(request[: len(request) // 2])
        closure = slowloris.trickle_until_closed(sock, request[len(request) // 2 :], give_up_s=10)
        assert closure.closed_after_s is not None and closure.closed_after_s <= 1.0 + SLACK_S
        assert _wait_until(lambda: not _server_side_open(listener.port, sock), 2.0)


def test_association_is_closed_at_its_whole_deadline_however_busy(tmp_path: Path) -> None:
    """A peer that keeps its association busy (a C-ECHO every 0.2 s) is still closed once the
    association's whole deadline passes."""
    settings = listener_settings(tmp_path / "archive", association_max_duration_s=2.0)
    with running_listener(settings, MemoryPublisher()) as (listener, _m), capture_logs() as logs:
        ae = AE(ae_title="BUSY")
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
        assoc = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
        assert assoc.is_established
        started = time.monotonic()
        while assoc.is_established and time.monotonic() - started < 10:
            assoc.send_c_echo()
            time.sleep(0.2)
        lived = time.monotonic() - started
        assoc.abort()
    assert 1.5 <= lived <= 2.0 + SLACK_S
    assert any(e.get("reason") == "association_deadline" for e in logs)


def test_command_whose_dataset_never_comes_is_aborted_after_the_message_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A C-STORE command announcing a dataset, then silence: aborted after the message gap
    (not the network timeout), its socket closed, its temporary file removed."""
    settings = listener_settings(tmp_path / "archive", message_gap_timeout_s=1.0, network_timeout_s=30.0)
    with (
        _temp_dir(tmp_path, monkeypatch) as temp_dir,
        running_listener(settings, MemoryPublisher()) as (listener, _m),
        capture_logs() as logs,
    ):
        with contextlib.closing(slowloris.associated(listener.port)) as sock:
            sock.sendall(slowloris.store_command_pdus())
            closure = slowloris.trickle_until_closed(sock, b"", give_up_s=10)
        assert closure.answer == "ABORT"
        assert closure.closed_after_s is not None and closure.closed_after_s <= 1.0 + SLACK_S
        assert _wait_until(lambda: list(temp_dir.iterdir()) == [], 3.0)
    assert any(e.get("reason") == "message_stalled" for e in logs)


def test_pdv_claiming_4_gib_is_aborted_at_once(tmp_path: Path) -> None:
    """A P-DATA within the announced maximum whose PDV item claims 0xFFFFFFF0 bytes is answered
    with A-ABORT at once, before the rest of the PDU is read."""
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _m):
        with contextlib.closing(slowloris.associated(listener.port)) as sock, capture_logs() as logs:
            pdv = struct.pack(">L", 0xFFFFFFF0) + bytes([slowloris.CONTEXT_ID, 0x00])
            sock.sendall(wire.pdu_header(0x04, 1000) + pdv)
            closure = slowloris.trickle_until_closed(sock, b"", give_up_s=5)
        assert closure.answer == "ABORT"
        assert closure.closed_after_s is not None and closure.closed_after_s < 1.0
        assert any(e.get("reason") == "pdv_length_invalid" for e in logs)


def test_pdu_beyond_the_announced_maximum_is_aborted_with_a_reason(tmp_path: Path) -> None:
    """A P-DATA announcing 64 MiB (we announced 1 MiB) gets A-ABORT, not a silent close."""
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _m):
        with contextlib.closing(slowloris.associated(listener.port)) as sock:
            sock.sendall(wire.pdu_header(0x04, 64 * 1024**2) + bytes(1024))
            closure = slowloris.trickle_until_closed(sock, b"", give_up_s=5)
        assert closure.answer == "ABORT"
        assert closure.closed_after_s is not None and closure.closed_after_s < 1.0


def test_one_host_cannot_take_every_association_slot(tmp_path: Path) -> None:
    """From one address, 4 associations (the default per peer) are admitted and the next ones get
    A-ASSOCIATE-RJ (transient); another host stores at once meanwhile."""
    settings = listener_settings(tmp_path / "archive", max_associations=16)
    with running_listener(settings, MemoryPublisher()) as (listener, metrics):
        ae = AE(ae_title="GREEDY")
        ae.add_requested_context(Verification)
        with capture_logs() as logs:
            held = [
                ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE, bind_address=(OTHER_HOST, 0))
                for _ in range(6)
            ]
        try:
            assert [a.is_established for a in held] == [True] * 4 + [False] * 2
            assert all(a.is_rejected for a in held[4:])
            reasons = [e["reason"] for e in logs if e["event"] == "association_rejected"]
            assert reasons == ["too_many_associations_from_peer"] * 2
            started = time.monotonic()
            assert send_files(listener.port, [_good_file(tmp_path)]) == [statuses.SUCCESS]
            assert time.monotonic() - started < 3.0
        finally:
            for a in held:
                if a.is_established:
                    a.release()
        outcome = {"outcome": "too_many_associations_from_peer"}
        assert metrics.registry.get_sample_value("kidneyct_ingest_associations_total", outcome) == 2


def test_pending_connections_are_bounded_per_peer(tmp_path: Path) -> None:
    """10 silent connections from one address: 4 are kept, the others closed at once; another
    host stores meanwhile, and the first host once its connections are gone."""
    good = _good_file(tmp_path)
    settings = listener_settings(
        tmp_path / "archive", association_establish_timeout_s=20.0, acse_timeout_s=20.0
    )
    with running_listener(settings, MemoryPublisher()) as (listener, _m):
        sockets = [slowloris.connect(listener.port, source=OTHER_HOST) for _ in range(10)]
        try:
            closed = [wire.read_until_closed(s, timeout_s=0.5)[1] is not None for s in sockets]
            assert closed == [False] * 4 + [True] * 6
            assert send_files(listener.port, [good]) == [statuses.SUCCESS]
        finally:
            for sock in sockets:
                sock.close()
        assert _wait_until(lambda: _associates_from(OTHER_HOST, listener.port), 3.0)


def _associates_from(host: str, port: int) -> bool:
    """An association from `host` is accepted (then released)."""
    ae = AE(ae_title="SECOND")
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOCALHOST, port, ae_title=OUR_AE, bind_address=(host, 0))
    if not assoc.is_established:
        return False
    assoc.release()
    return True


@pytest.mark.parametrize(
    ("sop_class", "sop_instance"),
    [("1.2.3.4.5.6", None), (CTImageStorage, ""), (CTImageStorage, "\x00")],
    ids=["unknown_sop_class", "empty_instance_uid", "nul_instance_uid"],
)
def test_unhandled_store_requests_leave_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sop_class: str, sop_instance: str | None
) -> None:
    """A C-STORE the listener cannot handle (an unknown SOP class in the command, an empty or NUL
    SOP Instance UID) ends its association at once and leaves the temporary folder empty."""
    ds = datasets.ct_slice()
    data = datasets.encode(ds, implicit=False)
    instance = str(ds.SOPInstanceUID) if sop_instance is None else sop_instance
    with (
        _temp_dir(tmp_path, monkeypatch) as temp_dir,
        running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _m),
    ):
        for _ in range(3):
            assoc = wire.associate(listener.port, [(CTImageStorage, [ExplicitVRLittleEndian])])
            cx = wire.context_id_for(assoc, CTImageStorage)
            started = time.monotonic()
            status = wire.raw_store(assoc, cx, sop_class=sop_class, sop_instance=instance, dataset=data)
            assert status is None and time.monotonic() - started < 3.0
            assoc.abort()
            assert _wait_until(lambda: list(temp_dir.iterdir()) == [], 3.0), list(temp_dir.iterdir())
        assert send_files(listener.port, [_good_file(tmp_path)]) == [statuses.SUCCESS]


@pytest.mark.parametrize("sop_instance", ["", "\x00"], ids=["empty_instance_uid", "nul_instance_uid"])
def test_an_undecodable_store_command_is_aborted_in_order_not_a_thread_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sop_instance: str
) -> None:
    """A C-STORE command whose SOP Instance UID is empty or NUL (pydicom refuses the file meta
    pynetdicom writes for it): A-ABORT and one `association_aborted` line, no uncaught exception
    in the listener's reading thread (logged as `uncaught_exception` by common.log)."""
    crashed: list[str] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashed.append(args.exc_type.__name__))
    data = datasets.encode(datasets.ct_slice(), implicit=False)
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _m):
        with capture_logs() as logs:
            assoc = wire.associate(listener.port, [(CTImageStorage, [ExplicitVRLittleEndian])])
            cx = wire.context_id_for(assoc, CTImageStorage)
            status = wire.raw_store(
                assoc, cx, sop_class=CTImageStorage, sop_instance=sop_instance, dataset=data
            )
            assert status is None
            assert _wait_until(lambda: assoc.is_aborted or not assoc.is_alive(), 3.0)
            assoc.abort()
        assert send_files(listener.port, [_good_file(tmp_path)]) == [statuses.SUCCESS]
    assert crashed == []
    aborted = [e for e in logs if e["event"] == "association_aborted"]
    assert [e["reason"] for e in aborted if "reason" in e] == ["dimse_message_undecodable"]
    assert not any(e["event"] == "uncaught_exception" for e in logs)


def test_invalid_request_aborts_the_association_at_once(tmp_path: Path) -> None:
    """A C-ECHO-RQ without its Affected SOP Class UID is not left unanswered until the network
    timeout: the association is aborted at once."""
    echo = C_ECHO()
    echo.MessageID = 1
    message = C_ECHO_RQ()
    message.primitive_to_message(echo)
    pdus = b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(slowloris.CONTEXT_ID, 16382))
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _m):
        with contextlib.closing(slowloris.associated(listener.port)) as sock, capture_logs() as logs:
            sock.sendall(pdus)
            closure = slowloris.trickle_until_closed(sock, b"", give_up_s=5)
        assert closure.answer == "ABORT"
        assert closure.closed_after_s is not None and closure.closed_after_s < 1.0
        assert any(e.get("reason") == "invalid_request" for e in logs)


def test_connection_closed_before_associating_ends_its_thread_at_once(tmp_path: Path) -> None:
    """A connection closed before its A-ASSOCIATE-RQ (a port probe) leaves no association thread
    waiting the ACSE timeout (it would hold up a graceful stop)."""
    settings = listener_settings(tmp_path / "archive", acse_timeout_s=30.0)
    with running_listener(settings, MemoryPublisher()) as (listener, _m):
        for _ in range(3):
            slowloris.connect(listener.port).close()
        assert _wait_until(lambda: listener.active_associations() == 0, 1.5)
