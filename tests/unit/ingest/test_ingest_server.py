"""The association server's limits under idle, half-open, oversized and aborted connections (loopback)."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ingest_support import (
    LOCALHOST,
    OUR_AE,
    MemoryPublisher,
    client_tls_args,
    dataset_bytes,
    listener_settings,
    make_certificates,
    running_listener,
    send_files,
    synthetic_ct,
)
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from structlog.testing import capture_logs

from fuzz import wire
from ingest import statuses


def _good_file(tmp_path: Path) -> Path:
    return synthetic_ct(
        tmp_path / f"good-{generate_uid()}.dcm", study_uid=generate_uid(), series_uid=generate_uid(), number=1
    )


# Another loopback address: a second host, as far as the listener's per-peer limits can tell.
OTHER_HOST = "127.0.0.2"


@contextlib.contextmanager
def _idle_sockets(
    port: int, count: int, first_bytes: bytes = b"", *, source: str = LOCALHOST
) -> Iterator[list[socket.socket]]:
    sockets = [
        socket.create_connection((LOCALHOST, port), timeout=5, source_address=(source, 0))
        for _ in range(count)
    ]
    try:
        for sock in sockets:
            if first_bytes:
                sock.sendall(first_bytes)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_idle_connections_do_not_lock_valid_senders_out(tmp_path: Path) -> None:
    """16 silent TCP connections from another host take no association slot: a valid sender
    stores at once."""
    good = _good_file(tmp_path)
    settings = listener_settings(tmp_path / "archive", max_associations=16)
    with (
        running_listener(settings, MemoryPublisher()) as (listener, _metrics),
        _idle_sockets(listener.port, 16, source=OTHER_HOST),
    ):
        time.sleep(0.3)  # let the listener accept them all
        started = time.monotonic()
        assert send_files(listener.port, [good]) == [statuses.SUCCESS]
        assert time.monotonic() - started < 3.0


def test_partial_associate_request_is_closed_after_the_establish_timeout(tmp_path: Path) -> None:
    """A-ASSOCIATE-RQ headers that never complete are closed after the timeout, freeing the server."""
    settings = listener_settings(tmp_path / "archive", association_establish_timeout_s=1.0)
    header = wire.pdu_header(0x01, 1000) + b"\x00\x01"
    with running_listener(settings, MemoryPublisher()) as (listener, _metrics):
        with _idle_sockets(listener.port, 3, header) as sockets:
            closed_after = [wire.read_until_closed(s, timeout_s=5.0)[1] for s in sockets]
        assert all(t is not None and t < 4.0 for t in closed_after), closed_after


def test_max_associations_admits_exactly_that_many(tmp_path: Path) -> None:
    """With max_associations=16, 16 associations are established and the 17th is rejected; a slot
    freed by a release is free at once."""
    settings = listener_settings(tmp_path / "archive", max_associations=16, max_associations_per_peer=16)
    with running_listener(settings, MemoryPublisher()) as (listener, _metrics):
        ae = AE(ae_title="MANY")
        ae.add_requested_context(Verification)
        held = [ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE) for _ in range(16)]
        try:
            assert all(a.is_established for a in held)
            with capture_logs() as logs:
                extra = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
            assert extra.is_rejected
            assert [e["reason"] for e in logs if e["event"] == "association_rejected"] == [
                "too_many_associations"
            ]
            for _ in range(5):  # release one and take its place at once, several times
                held.pop().release()
                held.append(ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE))
                assert held[-1].is_established
        finally:
            for a in held:
                a.release()
        again = ae.associate(LOCALHOST, listener.port, ae_title=OUR_AE)
        assert again.is_established
        again.release()


def test_huge_associate_request_is_closed_without_being_read(tmp_path: Path) -> None:
    """An A-ASSOCIATE-RQ announcing 300 MB is refused at its header, before 300 MB are buffered."""
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _m):
        with capture_logs() as logs:
            _data, closed_after = wire.send_raw(
                listener.port, wire.pdu_header(0x01, 300 * 1024**2) + b"\x00" * 64
            )
        assert closed_after is not None and closed_after < 3.0
        assert any(e.get("reason") == "pdu_too_large" for e in logs)
        assert send_files(listener.port, [_good_file(tmp_path)]) == [statuses.SUCCESS]


def test_default_max_pdu_is_bounded() -> None:
    """The listener announces a bounded maximum PDU by default (memory per association is bounded)."""
    settings = listener_settings(Path("unused"))
    assert 0 < settings.max_pdu_size <= 4 * 1024 * 1024


def test_aborted_store_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A C-STORE aborted half way leaves nothing in the temporary folder."""
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_dir))
    good = _good_file(tmp_path)
    payload = dataset_bytes(good) + b"\x00" * 3_000_000  # several PDUs of at most 1 MiB
    with running_listener(listener_settings(tmp_path / "archive"), MemoryPublisher()) as (listener, _m):
        assoc = wire.associate(listener.port, [(CTImageStorage, [ExplicitVRLittleEndian])])
        assert assoc.is_established
        cx = wire.context_id_for(assoc, CTImageStorage)
        wire.partial_store(
            assoc, cx, sop_class=CTImageStorage, sop_instance=generate_uid(), dataset=payload, fragments=2
        )
        deadline = time.monotonic() + 5
        while not list(temp_dir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(temp_dir.iterdir()), "the partial dataset should have reached a temporary file"
        assoc.abort()
        deadline = time.monotonic() + 5
        while list(temp_dir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(temp_dir.iterdir()) == []


def test_silent_tls_connection_does_not_block_others_and_failure_names_the_peer(tmp_path: Path) -> None:
    """With TLS, a silent TCP connection holds up no one; a failed handshake logs the peer address."""
    certs = make_certificates(tmp_path / "certs")
    good = _good_file(tmp_path)
    settings = listener_settings(
        tmp_path / "archive",
        tls_cert=certs.server_cert,
        tls_key=certs.server_key,
        tls_ca=certs.ca,
        association_establish_timeout_s=2.0,
    )
    with running_listener(settings, MemoryPublisher()) as (listener, _metrics):
        with _idle_sockets(listener.port, 1):
            time.sleep(0.2)
            started = time.monotonic()
            assert send_files(listener.port, [good], tls_args=client_tls_args(certs)) == [statuses.SUCCESS]
            assert time.monotonic() - started < 1.5
        with capture_logs() as logs:
            assert send_files(listener.port, [good]) is None  # plain DICOM to a TLS port
            deadline = time.monotonic() + 3
            while (
                not any(e.get("reason") == "tls_handshake_failed" for e in logs)
                and time.monotonic() < deadline
            ):
                time.sleep(0.05)
        failed = [e for e in logs if e.get("reason") == "tls_handshake_failed"]
        assert failed and failed[0]["peer_address"] == LOCALHOST
