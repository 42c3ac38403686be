"""pynetdicom keeps some switches in its module-global `_config`: this is the one place our code
changes them (tests and benchmarks too), so a reader finds every process-wide DICOM setting here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pynetdicom import _config


def enable_chunked_receive(enabled: bool = True) -> None:
    """Write each received C-STORE dataset to a temporary file instead of memory.

    The listener turns it on before it serves, so a 1 GB multi-frame instance costs disk, not
    memory (the handler gets `event.dataset_path`).
    """
    _config.STORE_RECV_CHUNKED_DATASET = enabled


@contextmanager
def chunked_send() -> Iterator[None]:
    """While inside, `send_c_store(path)` sends the file's bytes as stored (no decode, no re-encoding)."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
