"""Last slice -> SR in the PACS: how long after a study's last C-STORE its report is in Orthanc.

`kidneyct serve` on the embedded default (SQLite + the database queue) at default settings, with a
real Orthanc (Debian's /usr/sbin/Orthanc) as the result destination. One synthetic study of
--slices slices is sent in one association; the clock starts when the association is released
(the last slice acknowledged) and stops when Orthanc holds the study's SR. Then one late slice in a
new association: the time until the revised SR (revision 2) is in Orthanc.

Two servers in the same run, the same study shape and model:
  - release hints (the default): a released association completes its studies after
    KIDNEYCT_STUDY_RELEASE_GRACE_S (3 s);
  - the baseline, KIDNEYCT_RELEASE_HINTS=false: only the stable-age timer (KIDNEYCT_STUDY_STABLE_AGE_S,
    60 s) completes a study.

    python benchmarks/release_to_pacs.py                      # 60 slices, 64 px model
    python benchmarks/release_to_pacs.py --image-size 224 --skip-baseline

The model is ResNet50 with random weights at --image-size: the time does not depend on what the
weights learned (an untrained model's studies are indeterminate; the SR says so, and is sent all the same).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from e2e_latency import _make_model, _prepare_database, _start_serve  # noqa: E402
from orthanc_kit import ORTHANC, OrthancServer  # noqa: E402

from common.log import configure_logging  # noqa: E402

SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.22",
    "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.34",
}


def _srs_in(orthanc: OrthancServer, study: str) -> int:
    return sum(1 for i in orthanc.instances_of_study(study) if i.get("SOPClassUID") in SR_CLASSES)


def _wait_srs(orthanc: OrthancServer, study: str, count: int, timeout_s: float) -> float | None:
    """Seconds until Orthanc holds `count` SRs of the study (None on timeout), polled every 0.25 s."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if _srs_in(orthanc, study) >= count:
            return time.monotonic() - started
        time.sleep(0.25)
    return None


def run_server(
    name: str, work: Path, args: argparse.Namespace, artifact: tuple[str, str], hints: bool
) -> dict:
    from kidneyct.send_files import send_files
    from training.synth.generate import generate

    run = work / name
    (run / "data").mkdir(parents=True)
    url = f"sqlite:///{run / 'data' / 'kidneyct.db'}"
    _prepare_database(url, artifact, args.image_size)
    rows = generate(run / "synth", studies=1, slices=args.slices + 1, classes=["Stone"], seed=3, size=128)
    paths = [run / "synth" / r.path for r in rows]
    study = rows[0].study_instance_uid
    orthanc = OrthancServer(run / "orthanc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    env.update(
        KIDNEYCT_DATA_DIR=str(run / "data"),
        KIDNEYCT_LOG_FORMAT="json",
        KIDNEYCT_DICOM_HOST="127.0.0.1",
        KIDNEYCT_DICOM_PORT="0",
        KIDNEYCT_DEVICE="cpu",
        KIDNEYCT_RESULT_DESTINATIONS=f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
        KIDNEYCT_RELEASE_HINTS=str(hints).lower(),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    proc, port = _start_serve(env, run / "serve.log")
    try:
        assert all(r.ok for r in send_files("127.0.0.1", port, paths[:-1], called_ae="KIDNEYCT"))
        first = _wait_srs(orthanc, study, 1, args.timeout_s)
        assert all(r.ok for r in send_files("127.0.0.1", port, paths[-1:], called_ae="KIDNEYCT"))
        late = _wait_srs(orthanc, study, 2, args.timeout_s)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        orthanc.stop()
    return {"first": first, "late": late}


def _cell(seconds: float | None, timeout_s: float) -> str:
    return f"{seconds:>8.1f}" if seconds is not None else f"  >{timeout_s:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=60, help="slices in the study (one association)")
    parser.add_argument("--image-size", type=int, default=64, help="the model's input size")
    parser.add_argument("--timeout-s", type=float, default=240.0, help="give up waiting for an SR after this")
    parser.add_argument("--skip-baseline", action="store_true", help="skip the stable-age-only server")
    args = parser.parse_args()
    configure_logging(level="warning")  # the synthetic studies' progress lines are not the result
    if not Path(ORTHANC).exists():
        raise SystemExit(f"needs Orthanc at {ORTHANC} (Debian package orthanc)")
    with tempfile.TemporaryDirectory(prefix="kidneyct-release-") as tmp:
        work = Path(tmp)
        artifact = _make_model(work / "model", args.image_size)
        print(
            f"{args.slices} slices + 1 late, ResNet50 {args.image_size} px (random weights), embedded serve, "
            f"Orthanc destination; cpus={os.cpu_count()}; load average before: "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        results = {"release hints (default)": run_server("hints", work, args, artifact, hints=True)}
        if not args.skip_baseline:
            results["stable age only"] = run_server("stable-age", work, args, artifact, hints=False)
    print(f"{'server':<24} | {'last slice -> SR s':>18} | {'late slice -> revised SR s':>26}")
    for name, r in results.items():
        print(
            f"{name:<24} | {_cell(r['first'], args.timeout_s):>18} | {_cell(r['late'], args.timeout_s):>26}"
        )
    base, ours = results.get("stable age only"), results["release hints (default)"]
    if base and base["first"] and ours["first"]:
        print(f"ratio last slice -> SR, release hints / stable age: {ours['first'] / base['first']:.2f}")
    print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
