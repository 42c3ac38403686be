"""Where the listener's CPU goes per instance: every thread of an in-process listener profiled.

The listener runs in this process on the embedded queue (SQLite), as `kidneyct listen` does
without Kafka; a child process sends `--count` synthetic 512x512 CT slices over one association,
so the sender's CPU is not counted. Each listener thread gets a `cProfile.Profile` timed with
`time.thread_time` (CPU time of that thread, not wall time), started by a `threading.setprofile`
hook on the thread's first call. The report gives the CPU of each stage as a share of all profiled
CPU and in ms per instance (profiled: inflated by the profiler, so read the shares), plus the
process CPU per instance of a second, unprofiled run.

    python benchmarks/profile_listener.py --count 200
    python benchmarks/profile_listener.py --count 200 --kafka 127.0.0.1:19092
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingest_throughput import make_slices
from prometheus_client import CollectorRegistry

import migrations
from common.log import configure_logging
from ingest.metrics import IngestMetrics
from kidneyct.settings import Settings
from kidneyct.streams import make_publisher
from kidneyct.wiring.ingest import build_listener
from storage.db.engine import make_engine, make_session_factory
from storage.stream.kafka_stream import KafkaConnection, ensure_topics

# Stage -> (module path suffix, function name) whose cumulative CPU is the stage's. Nested stages
# (hashing inside archiving) are reported on their own and subtracted from their parent.
STAGES: dict[str, list[tuple[str, str]]] = {
    "header read + validation": [
        ("ingest/validation.py", "read_header"),
        ("ingest/validation.py", "validate"),
    ],
    "content checks": [
        ("ingest/content_checks.py", "check_encoding"),
        ("ingest/content_checks.py", "check_pixel_data"),
        ("ingest/content_checks.py", "check_first_frame_decodes"),
    ],
    "archive (copy, fsync, rename) w/o hashing": [
        ("ingest/ingestor.py", "_place"),
        ("storage/archive/local.py", "sync_entry"),
    ],
    "hashing (sha256)": [("~", "_hashlib.HASH")],
    "event encoding (to_json)": [("storage/stream/events.py", "to_json")],
    "publish (embedded queue insert + commit)": [("storage/stream/db_queue.py", "publish")],
    "publish (Kafka: hand-over and wait in the handler)": [
        ("storage/stream/kafka_stream.py", "begin_publish"),
        ("storage/stream/kafka_stream.py", "wait"),
    ],
    "logging (structlog)": [("structlog", "_proxy_to_logger")],
}
SENDER = """
import sys
from pathlib import Path
from kidneyct.send_files import send_files
results = send_files("127.0.0.1", int(sys.argv[1]), sorted(Path(sys.argv[2]).glob("*.dcm")), called_ae="KIDNEYCT", timeout_s=300)
assert all(r.ok for r in results), [hex(r.status) for r in results if not r.ok]
"""


@contextmanager
def listener(work: Path, kafka: str | None) -> Iterator[int]:
    url = f"sqlite:///{work / 'kidneyct.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    topic = f"profile-{work.name}-{time.monotonic_ns()}"
    settings = Settings(  # type: ignore[call-arg]
        data_dir=work,
        dicom_host="127.0.0.1",
        dicom_port=0,
        kafka_bootstrap=kafka,
        topic_instances=topic,
        allowed_calling_aes="",
    )
    if kafka:
        ensure_topics(KafkaConnection(bootstrap=kafka), [topic], partitions=1, replication_factor=1)
    publisher = make_publisher(settings, make_session_factory(engine))
    server = build_listener(settings, publisher=publisher, metrics=IngestMetrics(CollectorRegistry()))
    server.start()
    try:
        yield server.port
    finally:
        server.stop(grace_s=5.0)
        publisher.close()
        engine.dispose()


def send(port: int, slices: Path) -> None:
    subprocess.run([sys.executable, "-c", SENDER, str(port), str(slices)], check=True)


def profiled_run(work: Path, slices: Path, kafka: str | None) -> pstats.Stats:
    profiles: list[cProfile.Profile] = []

    def boot(_frame: Any, _event: str, _arg: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()  # replaces this hook in this thread

    threading.setprofile(boot)
    try:
        with listener(work, kafka) as port:
            send(port, slices)
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    stats = pstats.Stats(profiles[0])
    for p in profiles[1:]:
        stats.add(p)
    return stats


def cumulative(stats: pstats.Stats, where: str, name: str) -> float:
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    return sum(v[3] for (file, _line, func), v in raw.items() if where in file and name in func)


def report(stats: pstats.Stats, count: int) -> None:
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    # A blocked lock acquire uses no CPU, yet cProfile charged seconds to it in the Kafka run
    # (a thread-clock artifact around threads that wait): left out of the total and of the rest.
    blocked = cumulative(stats, "~", "acquire' of '_thread.lock")
    total = sum(v[2] for v in raw.values()) - blocked
    shares = {stage: sum(cumulative(stats, w, n) for w, n in fns) for stage, fns in STAGES.items()}
    archive = "archive (copy, fsync, rename) w/o hashing"
    shares[archive] -= min(shares["hashing (sha256)"], shares[archive])  # the archive hashes as it copies
    handler = cumulative(stats, "ingest/handlers.py", "handle_store")
    shares["rest of the C-STORE handler"] = handler - sum(shares.values())
    sender = cumulative(stats, "kafka/producer/sender.py", "run")  # kafka-python's own thread
    if sender:
        shares["kafka-python sender thread"] = sender
    shares["pynetdicom (PDUs, DIMSE, ACSE, sockets) and the rest"] = total - handler - sender
    print(
        f"profiled CPU, all listener threads: {total:.2f} s for {count} instances "
        f"(left out: {blocked:.2f} s charged to blocked lock acquires)"
    )
    print(f"{'stage':<55} {'share':>6} {'ms/inst':>8}")
    for stage, seconds in shares.items():
        print(f"{stage:<55} {seconds / total:>6.1%} {seconds / count * 1000:>8.2f}")
    print("\ntop 15 functions by own CPU:")
    stats.sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--stats", type=Path, help="also write the merged pstats file here")
    parser.add_argument("--kafka", help="bootstrap of a real broker (acks=all) instead of the embedded queue")
    args = parser.parse_args()
    # As `kidneyct listen` logs by default (a line per instance): its cost is part of the answer.
    configure_logging(fmt="json", level="info")
    with tempfile.TemporaryDirectory(prefix="kidneyct-profile-") as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        make_slices(root / "in", args.count)
        (root / "plain").mkdir()
        with listener(root / "plain", args.kafka) as port:
            cpu = time.process_time()
            send(port, root / "in")
            cpu = time.process_time() - cpu
        print(f"unprofiled: listener process CPU {cpu / args.count * 1000:.2f} ms per instance")
        (root / "profiled").mkdir()
        stats = profiled_run(root / "profiled", root / "in", args.kafka)
        if args.stats:
            stats.dump_stats(args.stats)
        report(stats, args.count)


if __name__ == "__main__":
    main()
