"""Sending what a conforming SCU never would: a C-STORE on any presentation context with any
command UIDs and any dataset bytes, a C-STORE cut off half way, and raw PDUs on a bare socket.

pynetdicom's `send_c_store` picks the context from the dataset and checks the UIDs; these go under
it (`DIMSEMessage.encode_msg` and the DUL), so the listener sees exactly the bytes we choose.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from io import BytesIO

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE

LOCALHOST = "127.0.0.1"


def associate(
    port: int,
    contexts: Sequence[tuple[str, Sequence[str]]],
    *,
    called_ae: str = "KIDNEYCT",
    calling_ae: str = "FUZZER",
    host: str = LOCALHOST,
    timeout_s: float = 10.0,
    max_pdu: int = 16382,
) -> Association:
    """An association proposing `contexts` (abstract syntax, transfer syntaxes)."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.maximum_pdu_size = max_pdu
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, list(syntaxes))
    return ae.associate(host, port, ae_title=called_ae)


def context_id_for(assoc: Association, abstract_syntax: str, transfer_syntax: str | None = None) -> int:
    for cx in assoc.accepted_contexts:
        if cx.abstract_syntax == abstract_syntax and (
            transfer_syntax is None or cx.transfer_syntax[0] == transfer_syntax
        ):
            return int(cx.context_id)  # type: ignore[arg-type]
    raise LookupError(f"no accepted context for {abstract_syntax} {transfer_syntax}")


def _store_message(sop_class: str, sop_instance: str, dataset: bytes, message_id: int) -> C_STORE_RQ:
    request = C_STORE()
    request.MessageID = message_id
    request.Priority = 2
    # Bypass the primitive's UID checks: the listener must cope with whatever arrives.
    request._affected_sop_class_uid = sop_class  # type: ignore[assignment]
    request._affected_sop_instance_uid = sop_instance  # type: ignore[assignment]
    request.DataSet = BytesIO(dataset)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return message


def raw_store(
    assoc: Association,
    context_id: int,
    *,
    sop_class: str,
    sop_instance: str,
    dataset: bytes,
    message_id: int = 1,
    timeout_s: float = 30.0,
) -> int | None:
    """Send one C-STORE-RQ as given; its response status, or None when none came back in time."""
    message = _store_message(sop_class, sop_instance, dataset, message_id)
    # As a conforming sender: PDUs no larger than the listener announced (0 announces no limit).
    with _reactor_paused(assoc):
        for pdata in message.encode_msg(context_id, assoc.acceptor.maximum_length or 0):
            assoc.dul.send_pdu(pdata)
        deadline = time.monotonic() + timeout_s
        assoc.dimse_timeout = 0.5  # wait in short steps: an aborted association ends the wait at once
        # With the reactor paused, an A-ABORT from the listener shows only in the DUL's state.
        while assoc.is_established and _connected(assoc) and time.monotonic() < deadline:
            _cx, response = assoc.dimse.get_msg(block=True)
            if response is None:
                continue
            status = getattr(response, "Status", None)
            return int(status) if status is not None else None
    return None


def _connected(assoc: Association) -> bool:
    return assoc.dul.state_machine.current_state != "Sta1"


@contextlib.contextmanager
def _reactor_paused(assoc: Association) -> Iterator[None]:
    """As pynetdicom's own senders do: keep its reactor from taking our response."""
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + 5
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0001)
    try:
        yield
    finally:
        assoc._reactor_checkpoint.set()


def partial_store(
    assoc: Association,
    context_id: int,
    *,
    sop_class: str,
    sop_instance: str,
    dataset: bytes,
    fragments: int,
) -> None:
    """Send only the first `fragments` P-DATA of a C-STORE (the dataset never completes)."""
    message = _store_message(sop_class, sop_instance, dataset, 1)
    # Fragments of at most 256 KiB even when the listener announces no limit, so there is a "midway".
    fragment = min(assoc.acceptor.maximum_length or 262144, 262144)
    for i, pdata in enumerate(message.encode_msg(context_id, fragment)):
        if i >= fragments:
            break
        assoc.dul.send_pdu(pdata)


def open_socket(port: int, *, host: str = LOCALHOST, timeout_s: float = 10.0) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=timeout_s)
    return sock


def pdu_header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, length)


def read_until_closed(sock: socket.socket, *, timeout_s: float) -> tuple[bytes, float | None]:
    """What the peer sends until it closes (or `timeout_s`); the seconds until closed, or None."""
    started = time.monotonic()
    received = bytearray()
    sock.settimeout(0.2)
    while time.monotonic() - started < timeout_s:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return bytes(received), time.monotonic() - started
        if not chunk:
            return bytes(received), time.monotonic() - started
        received.extend(chunk)
    return bytes(received), None


def send_raw(port: int, payload: bytes, *, timeout_s: float = 5.0) -> tuple[bytes, float | None]:
    """Connect, send `payload`, read the answer until the listener closes (or `timeout_s`)."""
    with contextlib.closing(open_socket(port, timeout_s=timeout_s)) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        return read_until_closed(sock, timeout_s=timeout_s)
