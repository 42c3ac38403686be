"""One `kidneyct listen` from two code trees, alternating: inst/s and the listener's CPU per instance.

For a before/after of a listener change on a noisy machine: the same sender, slices and broker, the
two codes interleaved round by round (ABBA), so drift in the machine hits both alike.

    git worktree add --detach /tmp/before <commit>
    python benchmarks/listener_ab.py --tree before=/tmp/before --tree after=. --kafka 127.0.0.1:19092

Each tree's code runs the listener (`PYTHONPATH`); the sender is `benchmarks/ingest_throughput.py`'s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from ingest_throughput import free_port, make_slices, measure, start_kidneyct

from common.pynetdicom_switches import chunked_send

WARM_UP = 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a code tree (twice)")
    parser.add_argument("--kafka", help="bootstrap of a real broker (else the embedded SQLite queue)")
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--count", type=int, default=400, help="slices per measured run")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    if len(trees) != 2:
        parser.error("give exactly two --tree NAME=PATH")
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    with chunked_send(), tempfile.TemporaryDirectory(prefix="kidneyct-ab-") as tmp:
        work = Path(tmp)
        (work / "slices").mkdir()
        paths = make_slices(work / "slices", args.count + WARM_UP)
        print(f"{args.count} slices, {args.associations} associations, load {os.getloadavg()[0]:.2f}")
        for r in range(args.rounds):
            for name, tree in trees if r % 2 == 0 else trees[::-1]:
                run = work / f"{name}-{r}"
                run.mkdir()
                proc, port = start_kidneyct(
                    run, args.kafka, free_port(), {"PYTHONPATH": str(Path(tree).resolve())}
                )
                try:
                    measure(port, paths[:WARM_UP], args.associations)
                    result = measure(port, paths[WARM_UP:], args.associations, server_pids=[proc.pid])
                finally:
                    proc.terminate()
                    proc.wait()
                results[name].append(result)
                print(
                    f"round {r} {name:>10}: {result['per_s']:6.1f} inst/s, listener CPU "
                    f"{result['server_cpu_ms']:5.2f} ms/inst, p50 {result['p50']:5.1f} ms",
                    flush=True,
                )
    (a, ra), (b, rb) = ((name, results[name]) for name, _ in trees)
    rate_a, rate_b = (statistics.median(x["per_s"] for x in r) for r in (ra, rb))
    cpu_a, cpu_b = (statistics.median(x["server_cpu_ms"] for x in r) for r in (ra, rb))
    print(f"median inst/s: {a} {rate_a:.1f}, {b} {rate_b:.1f} ({b}/{a} {rate_b / rate_a:.2f})")
    print(f"median listener CPU ms/inst: {a} {cpu_a:.2f}, {b} {cpu_b:.2f}")


if __name__ == "__main__":
    main()
