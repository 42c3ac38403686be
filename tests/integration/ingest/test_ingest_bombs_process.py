"""Decompression bombs against a real `kidneyct listen` process (issue 23, items 1 and 2): each is
refused with 0xC004 before anything decodes or inflates it whole, and the listener's peak RSS (VmHWM,
reset before each bomb) stays within 100 MiB of where it started, far under the 512 MiB budget."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from fuzz import bombs, wire
from fuzz.listener_process import running_listener
from fuzz.run import CONTEXTS, REPO, quiet_fuzzer_side

pytestmark = pytest.mark.slow

BOMBS: list[tuple[str, Callable[[], tuple[Dataset, bytes]], str]] = [
    ("rle 65535 x 65535, 16 bits", bombs.rle_bomb, RLELossless),
    ("deflate 1 MB -> 1 GiB", lambda: bombs.deflate_bomb(1024), DeflatedExplicitVRLittleEndian),
    # Under the 512 MiB budget, refused by its ratio (KIDNEYCT_MAX_DEFLATE_RATIO).
    ("deflate 263 KB -> 256 MiB", lambda: bombs.deflate_bomb(256), DeflatedExplicitVRLittleEndian),
    ("JPEG 2000 SIZ 65535 x 65535", lambda: bombs.j2k_bomb(dicom_dims_too=False), JPEG2000Lossless),
    ("native 65535 x 65535 x 1000", bombs.native_bomb, ExplicitVRLittleEndian),
]


def test_every_bomb_is_refused_with_the_listener_memory_bounded(tmp_path: Path) -> None:
    """RLE, deflate (1 GiB, and 256 MiB at 1000x), JPEG 2000 and native bombs: 0xC004 each, peak RSS < start + 100 MiB, nothing left."""
    results = {}
    with quiet_fuzzer_side(), running_listener(REPO, tmp_path) as listener:
        assoc = wire.associate(listener.port, CONTEXTS, timeout_s=60)
        for name, build, syntax in BOMBS:
            ds, data = build()
            listener.reset_peak_rss()
            before = listener.rss_mib()
            status = wire.raw_store(
                assoc,
                wire.context_id_for(assoc, CTImageStorage, syntax),
                sop_class=CTImageStorage,
                sop_instance=str(ds.SOPInstanceUID),
                dataset=data,
                timeout_s=60,
            )
            results[name] = (status, round(listener.peak_rss_mib() - before))
        assoc.release()
        log = "\n".join(listener.log_lines())
        temp_left = list(listener.temp_dir.iterdir())
    assert {name: status for name, (status, _) in results.items()} == {name: 0xC004 for name, _, _ in BOMBS}
    assert {name: grew for name, (_, grew) in results.items() if grew >= 100} == {}
    assert log.count('"reason": "decoded_too_large"') == len(BOMBS)
    assert temp_left == []
