"""The fuzz campaign against a real `kidneyct listen` (embedded default, loopback only).

    python -m fuzz.run                        # 1,000+ cases, tables on stdout
    python -m fuzz.run --per-category 70 --pdu-per-category 12 --measure --json out.json
    python -m fuzz.run --listener-root /tmp/old-checkout   # the same cases against other code
    python -m fuzz.measure_bombs                           # each bomb once: status, seconds, peak RSS

Per category: cases sent, the statuses (or PDU answers) they got, wrongly accepted (success where
the case must be refused, or success for an instance the worker's own decoding then fails on),
escapes (a patient marker in the listener's log, a file outside the archive), crashes (the listener
process died) and the listener's RSS before and after. Every loop is bounded and stops by itself.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from fuzz import pdu, slowloris, wire
from fuzz.bomb_cases import bomb_cases
from fuzz.cases import PATIENT_MARKER, StoreCase, store_cases
from fuzz.listener_process import ListenerProcess, running_listener

REPO = Path(__file__).resolve().parent.parent
SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    DeflatedExplicitVRLittleEndian,
)
CONTEXTS = [(CTImageStorage, [syntax]) for syntax in SYNTAXES]
ESCAPE_PATHS = (Path("/tmp/fuzz-escape"),)


@dataclass
class Row:
    category: str
    sent: int = 0
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    wrongly_accepted: int = 0
    wrongly_refused: int = 0
    escapes: int = 0
    crashes: int = 0
    rss_before_mib: float = 0.0
    rss_after_mib: float = 0.0
    peak_rss_mib: float = 0.0  # the listener's peak RSS during this category alone

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["answers"] = dict(sorted(self.answers.items()))
        return out


# --- C-STORE cases ---------------------------------------------------------------------------------


class Sender:
    """One association reused across cases, opened again whenever a case ended it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.assoc: Any = None

    def store(self, case: StoreCase) -> str:
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = wire.associate(self.port, CONTEXTS)
            if not self.assoc.is_established:
                self.assoc = None
                return "no_association"
        try:
            cx = wire.context_id_for(self.assoc, CTImageStorage, case.context_syntax)
        except LookupError:
            return "no_context"
        try:
            status = wire.raw_store(
                self.assoc,
                cx,
                sop_class=case.sop_class,
                sop_instance=case.sop_instance,
                dataset=case.dataset,
                timeout_s=30,
            )
        except Exception as exc:  # noqa: BLE001 - the sender's own failure is an answer too
            self.close()
            return f"send_error:{type(exc).__name__}"
        if status is None:
            self.close()
            return "no_response"
        return f"0x{status:04X}"

    def close(self) -> None:
        if self.assoc is not None:
            try:
                if self.assoc.is_established:
                    self.assoc.release()
                else:
                    self.assoc.abort()
            except Exception:  # noqa: BLE001
                pass
        self.assoc = None


def run_store_cases(
    listener: ListenerProcess, cases: list[StoreCase]
) -> tuple[dict[str, Row], dict[str, StoreCase]]:
    rows: dict[str, Row] = {}
    accepted: dict[str, StoreCase] = {}
    sender = Sender(listener.port)
    for case in cases:
        row = rows.get(case.category)
        if row is None:
            listener.reset_peak_rss()
            row = rows[case.category] = Row(case.category, rss_before_mib=listener.rss_mib())
        answer = sender.store(case)
        row.sent += 1
        row.answers[answer] += 1
        if answer == "0x0000":
            accepted[case.sop_instance] = case
            if case.must_refuse:
                row.wrongly_accepted += 1
        elif case.must_accept:
            row.wrongly_refused += 1
        if not listener.alive():
            row.crashes += 1
            break
        row.rss_after_mib = listener.rss_mib()
        row.peak_rss_mib = listener.peak_rss_mib()
    sender.close()
    return rows, accepted


def judge_accepted(listener: ListenerProcess, accepted: dict[str, StoreCase], rows: dict[str, Row]) -> None:
    """An accepted case the worker's decoding then fails on was wrongly accepted (unless already
    counted because it must have been refused)."""
    from classifier.model.preprocess import Window
    from classifier.worker.decoding import DecodedInstance, Preprocessing, decode_record
    from classifier.worker.errors import NotClassifiable
    from storage.stream.contract import Record

    preprocessing = Preprocessing(image_size=32, window=Window(40.0, 400.0))
    db = sqlite3.connect(listener.data_dir / "kidneyct.db")
    try:
        values = [
            v for (v,) in db.execute("SELECT value FROM queue_messages WHERE topic = 'kidneyct.instances'")
        ]
    finally:
        db.close()
    for offset, value in enumerate(values):
        event = json.loads(value)
        case = accepted.get(event.get("sop_instance_uid", ""))
        if case is None or case.must_refuse:
            continue
        outcome = decode_record(
            Record("instances", 0, offset, b"", bytes(value)), preprocessing, listener.archive
        )
        if not isinstance(outcome, DecodedInstance) and not isinstance(outcome.error, NotClassifiable):
            rows[case.category].wrongly_accepted += 1


# --- PDU cases --------------------------------------------------------------------------------------


def run_pdu_cases(
    listener: ListenerProcess, per_category: int, *, seed: int, wait_s: float
) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    template = pdu.captured_associate_rq()
    cases: dict[str, Any] = {**pdu.PDU_CASES, "associate_rq_mutated": None}
    for category in cases:
        rng = random.Random(f"{seed}-{category}")
        listener.reset_peak_rss()
        row = rows[category] = Row(category, rss_before_mib=listener.rss_mib())

        def one(rng: random.Random = rng, category: str = category) -> pdu.PduOutcome:
            if category == "associate_rq_mutated":
                return pdu.mutated_associate(rng, listener.port, wait_s, template)
            return pdu.PDU_CASES[category](rng, listener.port, wait_s)

        if category in pdu.CONCURRENT:
            with ThreadPoolExecutor(max_workers=max(per_category, 1)) as pool:
                outcomes = list(
                    pool.map(
                        lambda r: one(r),
                        [random.Random(f"{seed}-{category}-{i}") for i in range(per_category)],
                    )
                )
        else:
            outcomes = [one() for _ in range(per_category)]
        for outcome in outcomes:
            row.sent += 1
            label = outcome.answer if outcome.answer != "none" else "closed"
            if outcome.closed_after_s is not None and outcome.closed_after_s > 5:
                label += f" after>{5}s"
            row.answers[label] += 1
        if not listener.alive():
            row.crashes += 1
            break
        row.rss_after_mib = listener.rss_mib()
        row.peak_rss_mib = listener.peak_rss_mib()
    return rows


# --- after the campaign ------------------------------------------------------------------------------


def log_findings(listener: ListenerProcess) -> dict[str, int]:
    lines = [line for line in listener.log_lines() if line.strip()]
    not_json = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json += 1
    return {
        "log_lines": len(lines),
        "log_lines_not_json": not_json,
        "log_lines_with_patient_marker": sum(PATIENT_MARKER in line for line in lines),
        "files_outside_archive": sum(1 for p in ESCAPE_PATHS if p.exists()),
        "temp_files_left": sum(1 for _ in listener.temp_dir.iterdir()),
    }


def campaign(
    *,
    root: Path,
    work_dir: Path,
    per_category: int,
    pdu_per_category: int,
    seed: int = 17,
    pdu_wait_s: float = 15.0,
    settings: dict[str, str] | None = None,
    bombs_per_category: int = 0,
) -> dict[str, Any]:
    """Every case against one listener process; rows by category plus the log and disk findings."""
    cases = [*store_cases(per_category, seed), *bomb_cases(bombs_per_category, per_category, seed)]
    with running_listener(root, work_dir, settings=settings) as listener:
        rss_start = listener.rss_mib()
        rows, accepted = run_store_cases(listener, cases)
        pdu_rows = (
            run_pdu_cases(listener, pdu_per_category, seed=seed, wait_s=pdu_wait_s)
            if listener.alive()
            else {}
        )
        # A valid sender must still be served after all that. Like a real sender it tries again a few
        # times: connections the PDU cases left are closed by their deadlines (seconds), and on a loaded
        # machine the first association can time out before the listener is back to idle.
        still_serving = _valid_sender_served(listener.port)
        time.sleep(1.0)  # let aborted associations clean up before counting temporary files
        findings = log_findings(listener)
        judge_accepted(listener, accepted, rows)
        escapes = findings["log_lines_with_patient_marker"] + findings["files_outside_archive"]
        if escapes and "patient_data_markers" in rows:
            rows["patient_data_markers"].escapes += findings["log_lines_with_patient_marker"]
        return {
            "cases": sum(r.sent for r in [*rows.values(), *pdu_rows.values()]),
            "rss_start_mib": rss_start,
            "rss_end_mib": listener.rss_mib(),
            "peak_rss_mib": listener.peak_rss_mib(),
            "alive_at_end": listener.alive(),
            "valid_sender_after_campaign": still_serving,
            "store_rows": [r.as_dict() for r in rows.values()],
            "pdu_rows": [r.as_dict() for r in pdu_rows.values()],
            **findings,
        }


def _valid_sender_served(port: int, attempts: int = 4, pause_s: float = 3.0) -> str:
    answer = "no_association"
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause_s)
        answer = Sender(port).store(_control())
        if answer == "0x0000":
            break
    return answer


def _control() -> StoreCase:
    from fuzz.cases import valid

    return valid(random.Random(0))


# --- measurements -------------------------------------------------------------------------------------


def measure_big_store(root: Path, work_dir: Path, size_mib: int = 256) -> dict[str, Any]:
    """Peak RSS of the listener for one valid C-STORE of `size_mib` MiB of native pixel data."""
    from fuzz import datasets

    with running_listener(root, work_dir) as listener:
        ds = datasets.ct_slice()
        ds.Rows, ds.Columns, ds.NumberOfFrames = 8192, 8192, size_mib // 128
        ds.PixelData = bytes(8192 * 8192 * 2 * (size_mib // 128))
        data = datasets.encode(ds, implicit=False)
        sop_instance = str(ds.SOPInstanceUID)
        del ds
        before = listener.rss_mib()
        # A sender that announces a maximum PDU as large as the whole dataset (as the fuzz campaign did).
        assoc = wire.associate(listener.port, CONTEXTS, max_pdu=0, timeout_s=120)
        cx = wire.context_id_for(assoc, CTImageStorage, ExplicitVRLittleEndian)
        started = time.monotonic()
        status = wire.raw_store(
            assoc, cx, sop_class=CTImageStorage, sop_instance=sop_instance, dataset=data, timeout_s=300
        )
        seconds = time.monotonic() - started
        assoc.release()
        return {
            "size_mib": size_mib,
            "status": None if status is None else f"0x{status:04X}",
            "seconds": round(seconds, 1),
            "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(listener.peak_rss_mib(), 1),
        }


def measure_huge_associate(root: Path, work_dir: Path, size_mib: int = 300) -> dict[str, Any]:
    """Peak RSS of the listener while a peer streams a `size_mib` MiB A-ASSOCIATE-RQ."""
    import socket

    with running_listener(root, work_dir) as listener:
        before = listener.rss_mib()
        sent = 0
        with socket.create_connection(("127.0.0.1", listener.port), timeout=30) as sock:
            try:
                sock.sendall(wire.pdu_header(0x01, size_mib * 1024**2))
                chunk = bytes(1024**2)
                for _ in range(size_mib):
                    sock.sendall(chunk)
                    sent += 1
            except OSError:
                pass
            time.sleep(1.0)
        return {
            "size_mib": size_mib,
            "mib_accepted_before_close": sent,
            "rss_before_mib": round(before, 1),
            "peak_rss_mib": round(listener.peak_rss_mib(), 1),
        }


def measure_idle_lockout(
    root: Path, work_dir: Path, idle: int = 16, give_up_s: float = 45.0
) -> dict[str, Any]:
    """How long a valid sender waits to store while `idle` silent connections are held open."""
    import socket

    with running_listener(root, work_dir, settings={"KIDNEYCT_MAX_ASSOCIATIONS": str(idle)}) as listener:
        held = [socket.create_connection(("127.0.0.1", listener.port), timeout=5) for _ in range(idle)]
        time.sleep(0.5)
        started = time.monotonic()
        attempts, answer = 0, "no_association"
        while time.monotonic() - started < give_up_s:
            attempts += 1
            answer = Sender(listener.port).store(_control())
            if answer == "0x0000":
                break
            time.sleep(0.5)
        waited = time.monotonic() - started
        for sock in held:
            sock.close()
        return {
            "idle_connections": idle,
            "waited_s": round(waited, 2),
            "attempts": attempts,
            "answer": answer,
        }


# --- tables -------------------------------------------------------------------------------------------


def table(rows: list[dict[str, Any]], title: str) -> str:
    lines = [
        f"| {title} | sent | answers | wrongly accepted | wrongly refused | escapes | crashes "
        "| RSS before → after (peak) (MiB) |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        answers = ", ".join(f"{k} ×{v}" for k, v in r["answers"].items())
        lines.append(
            f"| {r['category']} | {r['sent']} | {answers} | {r['wrongly_accepted']} | "
            f"{r.get('wrongly_refused', 0)} | {r['escapes']} | {r['crashes']} | "
            f"{r['rss_before_mib']:.0f} → {r['rss_after_mib']:.0f} ({r.get('peak_rss_mib', 0):.0f}) |"
        )
    return "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    parts = [
        table(result["store_rows"], "C-STORE category"),
        "",
        table(result["pdu_rows"], "PDU category"),
        "",
        f"cases: {result['cases']}; listener alive at the end: {result['alive_at_end']}; "
        f"valid sender after the campaign: {result['valid_sender_after_campaign']}; "
        f"RSS {result['rss_start_mib']:.0f} → {result['rss_end_mib']:.0f} MiB (peak {result['peak_rss_mib']:.0f}); "
        f"log lines {result['log_lines']}, not JSON {result['log_lines_not_json']}, with a patient marker "
        f"{result['log_lines_with_patient_marker']}; files outside the archive {result['files_outside_archive']}; "
        f"temporary files left {result['temp_files_left']}",
    ]
    return "\n".join(parts)


@contextlib.contextmanager
def quiet_fuzzer_side() -> Iterator[None]:
    """The fuzzer builds invalid datasets on purpose: pydicom's and pynetdicom's complaints in
    this process are expected noise (the listener's own log is what is checked). Restored on exit,
    so a test run in the same process sees those loggers and warnings as before."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("pydicom", "pynetdicom")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listener-root", type=Path, default=REPO, help="checkout whose listener to fuzz")
    parser.add_argument("--per-category", type=int, default=60)
    parser.add_argument("--pdu-per-category", type=int, default=12)
    parser.add_argument(
        "--bombs-per-category", type=int, default=3, help="cases per decompression-bomb category"
    )
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument(
        "--measure", action="store_true", help="also: 256 MiB C-STORE, 300 MB A-ASSOCIATE-RQ, idle lockout"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    with quiet_fuzzer_side(), tempfile.TemporaryDirectory(prefix="kidneyct-fuzz-") as work:
        result = campaign(
            root=args.listener_root.resolve(),
            work_dir=Path(work),
            per_category=args.per_category,
            pdu_per_category=args.pdu_per_category,
            seed=args.seed,
            bombs_per_category=args.bombs_per_category,
        )
        print(report(result), flush=True)
        result["slow"] = slowloris.slow_campaign(
            root=args.listener_root.resolve(), work_dir=Path(work), per_category=args.pdu_per_category
        )
        print(slowloris.slow_table(result["slow"]["slow_rows"]), flush=True)
        if args.measure:
            result["idle_lockout"] = measure_idle_lockout(args.listener_root.resolve(), Path(work))
            print("idle lockout:", result["idle_lockout"], flush=True)
            result["huge_associate"] = measure_huge_associate(args.listener_root.resolve(), Path(work))
            print("300 MiB A-ASSOCIATE-RQ:", result["huge_associate"], flush=True)
            result["big_store"] = measure_big_store(args.listener_root.resolve(), Path(work))
            print("256 MiB C-STORE:", result["big_store"], flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
