"""Each decompression bomb once, each against a fresh `kidneyct listen`: the status answered, the
seconds it took and the listener's peak RSS (issue 23, items 1 and 2).

    python -m fuzz.measure_bombs                                  # this checkout's listener
    python -m fuzz.measure_bombs --listener-root /path/to/other   # the same bombs against other code

A watchdog kills a listener whose RSS passes `--kill-above-mib` (so a measurement of unprotected
code cannot take the host down); its row then says so.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from fuzz import bombs, wire
from fuzz.listener_process import ListenerProcess, running_listener
from fuzz.run import CONTEXTS, REPO, quiet_fuzzer_side

BOMBS: dict[str, tuple[Callable[[], tuple[Dataset, bytes]], str]] = {
    "rle_65535x65535": (bombs.rle_bomb, RLELossless),
    "deflate_1GiB": (lambda: bombs.deflate_bomb(1024), DeflatedExplicitVRLittleEndian),
    "deflate_256MiB": (lambda: bombs.deflate_bomb(256), DeflatedExplicitVRLittleEndian),
    "j2k_siz_65535": (lambda: bombs.j2k_bomb(dicom_dims_too=False), JPEG2000Lossless),
    "j2k_siz_and_header_65535": (bombs.j2k_bomb, JPEG2000Lossless),
    "native_65535x65535x1000": (bombs.native_bomb, ExplicitVRLittleEndian),
}


def measure_one(
    root: Path, work_dir: Path, name: str, *, kill_above_mib: float, timeout_s: float = 300
) -> dict[str, Any]:
    build, syntax = BOMBS[name]
    ds, data = build()
    with running_listener(root, work_dir) as listener:
        before = listener.rss_mib()
        killed = threading.Event()
        seen: list[float] = [before]
        watchdog = threading.Thread(target=_watch, args=(listener, kill_above_mib, killed, seen), daemon=True)
        watchdog.start()
        assoc = wire.associate(listener.port, CONTEXTS, timeout_s=timeout_s)
        cx = wire.context_id_for(assoc, CTImageStorage, syntax)
        started = time.monotonic()
        try:
            status = wire.raw_store(
                assoc,
                cx,
                sop_class=CTImageStorage,
                sop_instance=str(ds.SOPInstanceUID),
                dataset=data,
                timeout_s=timeout_s,
            )
        except Exception:  # noqa: BLE001 - a listener killed mid-store ends the send
            status = None
        seconds = time.monotonic() - started
        peak = listener.peak_rss_mib() if listener.alive() else max(seen)
        with_assoc_closed(assoc)
        return {
            "bomb": name,
            "wire_bytes": len(data),
            "status": None if status is None else f"0x{status:04X}",
            "seconds": round(seconds, 2),
            "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(peak, 1),
            "killed_by_watchdog": killed.is_set(),
        }


def _watch(listener: ListenerProcess, limit_mib: float, killed: threading.Event, seen: list[float]) -> None:
    """Kill the listener above `limit_mib`; `seen` keeps the highest RSS sampled (every 50 ms)."""
    while listener.alive():
        rss = listener.rss_mib()
        if rss == rss:  # not NaN: the process was still there
            seen[0] = max(seen[0], rss)
        if rss > limit_mib:
            killed.set()
            listener.process.kill()
            return
        time.sleep(0.05)


def with_assoc_closed(assoc: Any) -> None:
    try:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()
    except Exception:  # noqa: BLE001 - the listener may be gone
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listener-root", type=Path, default=REPO)
    parser.add_argument("--kill-above-mib", type=float, default=12 * 1024)
    parser.add_argument("--only", action="append", choices=sorted(BOMBS), help="measure only these")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    with quiet_fuzzer_side(), tempfile.TemporaryDirectory(prefix="kidneyct-bombs-") as work:
        for name in args.only or list(BOMBS):
            result = measure_one(
                args.listener_root.resolve(), Path(work), name, kill_above_mib=args.kill_above_mib
            )
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
