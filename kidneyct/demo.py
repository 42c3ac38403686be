"""`kidneyct demo`: the whole loop on synthetic studies, on one machine, with progress at every step.

1. synthesize a training part and a test part (`kidneyct synth`'s generator, truth in CSV): the
   targeted kidney protocol with enlarged lesions, which a from-scratch model can learn in minutes;
2. start the C-STORE listener and send the training part to it (a pynetdicom SCU);
3. wait until the catalogue (the product's, run beside the listener as `kidneyct listen` runs it)
   has recorded the received instances, and label their slices from the truth, as a radiologist
   would, through `kidneyct label --csv`;
4. train with CPU-friendly settings (`kidneyct train --backbone tiny`: a tiny network of four conv
   blocks from scratch on small images, a CPU minute; no pre-trained weights since none can be
   downloaded here) and promote the result (`kidneyct models promote`);
5. start a classifier worker, send the test part, wait for its study results;
6. print the SQL it runs on `study_results` with the answer, and the accuracy against the truth;
   plots go to `<dir>/plots`.

The data is synthetic: the accuracy says the loop works, not how a model does on real patients.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import structlog
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from classifier.model.device import DeviceError, parse_device, pin_device, prefer_onednn
from common.log import configure_logging
from common.vocabulary import CLASS_NAMES
from kidneyct.commands.options import option
from kidneyct.commands.synth import lesion_scale_option, protocol_option
from kidneyct.settings import Settings
from training.determinism import prefer_determinism
from training.synth.phantom import KIDNEY, PROTOCOLS, ScanProtocol
from training.synth.truth import TruthRow

log = structlog.get_logger(__name__)

STUDY_SQL = """SELECT study_instance_uid, accession_number, model_version, label,
       p_cyst, p_normal, p_stone, p_tumor, n_instances, complete, indeterminate_reason
FROM study_results
WHERE model_version = :version AND n_instances = :slices AND accession_number IN ({accessions})
ORDER BY accession_number"""


HEARTBEAT_S = 10.0  # no wait longer than this without a line
# After the last slice is classified, how long the demo waits for the worker's sweep to mark its studies
# complete (stable age 3 s in the demo, plus a sweep interval and a loaded machine's delays).
COMPLETE_WITHIN_S = 30.0


class Steps:
    """Numbered progress lines with the time each step took."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.number = 0
        self.started = time.monotonic()

    @contextmanager
    def step(self, title: str, doing: str | None = None) -> Iterator[None]:
        """A numbered step; while it runs, a line every `HEARTBEAT_S` seconds says it still does `doing`."""
        self.number += 1
        click.secho(f"[{self.number}/{self.total}] {title}", bold=True)
        begun = time.monotonic()
        with _heartbeat(self, doing or f"on step {self.number}", HEARTBEAT_S):
            yield
        click.echo(f"      done in {time.monotonic() - begun:.1f} s")

    def note(self, line: str) -> None:
        click.echo(f"      {line}")

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


@click.command("demo")
@option(
    "--out",
    "root",
    hidden_aliases=["--dir"],
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("kidneyct-demo"),
    show_default=True,
    help="Everything the demo makes goes here (data, synthetic studies, plots).",
)
@click.option(
    "--train-studies",
    type=click.IntRange(min=4),
    default=320,
    show_default=True,
    help="Synthetic studies to train on (a quarter of them validate).",
)
@click.option(
    "--test-studies",
    type=click.IntRange(min=1),
    default=12,
    show_default=True,
    help="Synthetic studies sent over DICOM and classified.",
)
# 6 slices (a 15 mm slab through the kidneys' middle): for the instances a CPU minute allows, twice the
# patients of 12, and the validation studies that choose the abstention threshold are twice as many.
@click.option("--slices", type=click.IntRange(min=2), default=6, show_default=True, help="Slices per study.")
@option(
    "--slice-size",
    "size",
    hidden_aliases=["--size"],
    type=click.IntRange(min=32),
    default=64,
    show_default=True,
    help="Rows and columns of the synthetic slices.",
)
@click.option(
    "--image-size", type=click.IntRange(min=32), default=64, show_default=True, help="Model input size."
)
@protocol_option(default=KIDNEY.name)
@lesion_scale_option(default=1.8)  # large lesions: learnable from scratch in a few CPU minutes
@click.option(
    "--epochs", type=click.IntRange(min=1), default=20, show_default=True, help="Most training epochs."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the synthetic studies and of training."
)
@click.pass_obj
def demo(
    settings: Settings,
    root: Path,
    train_studies: int,
    test_studies: int,
    slices: int,
    size: int,
    image_size: int,
    protocol: str,
    lesion_scale: float,
    epochs: int,
    seed: int,
) -> None:
    """Run the whole loop on synthetic data: synthesize, send, label, train, promote, classify, query."""
    cfg = _demo_settings(settings, root.resolve(), image_size)
    root = root.resolve()
    steps = Steps(total=7)
    click.echo(f"kidneyct demo in {root} (synthetic data: it exercises the system, not clinical accuracy)")
    scan = Synthesis(train_studies, test_studies, slices, size, PROTOCOLS[protocol], lesion_scale, seed)
    with steps.step(f"synthesizing {train_studies} training and {test_studies} test studies"):
        train_rows, test_rows = _synthesize(steps, root, scan)
    with _listening(cfg) as (sessions, port):
        with steps.step(f"sending the training part over C-STORE to {cfg.ae_title}@127.0.0.1:{port}"):
            _send(steps, port, cfg.ae_title, root / "synth" / "train", train_rows, per_association=16)
        with steps.step("recording the received instances and labelling their slices (kidneyct label --csv)"):
            _label(cfg, sessions, root / "labels.csv", train_rows)
        with steps.step(
            f"training at {image_size}x{image_size} for up to {epochs} epochs (kidneyct train)",
            doing="training, then evaluating (Keras prints a line per epoch; the first also builds the graph)",
        ):
            steps.note(
                f"a tiny model, to be quick: four conv blocks (~0.1 M weights, not the served ResNet50) from "
                f"scratch on {image_size}x{image_size} inputs; it shows the loop works, it is not a clinical model"
            )
            version = _train(cfg, sessions, image_size=image_size, epochs=epochs, seed=seed)
        with steps.step(f"promoting {version} (kidneyct models promote)"):
            _promote_for_demo(cfg, version)
        _say_study_rule(steps, cfg, version)
        with steps.step("worker started; sending the test part and waiting for its study results"):
            sql, results = _classify_test_part(steps, cfg, sessions, port, root, test_rows, version, slices)
    with steps.step("results"):
        _report(steps, root, sql, version, slices, results, test_rows, scan)
    click.secho(f"demo finished in {steps.elapsed:.0f} s", bold=True)


@dataclass(frozen=True)
class Synthesis:
    train_studies: int
    test_studies: int
    slices: int
    size: int
    protocol: ScanProtocol
    lesion_scale: float
    seed: int


def _demo_settings(settings: Settings, root: Path, image_size: int) -> Settings:
    """The settings the demo runs on: local, fast to react, its data under `root` unless set."""
    prefer_onednn(os.environ)  # fast CPU training and inference kernels; before Keras is imported
    prefer_determinism(os.environ)  # the same seed gives the same model (`kidneyct train` is too late here)
    _quiet_tensorflow(settings)
    if "log_level" not in settings.model_fields_set:
        # The numbered steps are the demo's progress; a log line per received instance would bury them.
        configure_logging(
            fmt=settings.log_format, level="warning", redact_accession=settings.log_redact_accession
        )
    try:
        pin_device(parse_device(settings.device), os.environ)
    except DeviceError as exc:
        raise click.BadParameter(str(exc), param_hint="KIDNEYCT_DEVICE") from exc
    if settings.device == "cpu":  # a GPU device is pinned again by `kidneyct train`: not loaded here
        _load_backend_quietly()
    overrides: dict[str, object] = {
        "dicom_host": "127.0.0.1",
        "dicom_port": 0,
        "study_stable_age_s": 3.0,
        "model_poll_s": 1.0,
        "image_size": image_size,
    }
    if settings.data_dir == Settings.model_fields["data_dir"].default:
        overrides["data_dir"] = root / "data"
    return settings.model_copy(update=overrides)


@contextmanager
def _heartbeat(steps: Steps, doing: str, every_s: float = 15.0) -> Iterator[None]:
    """A line every `every_s` seconds while the block runs: Keras prints nothing while it compiles the
    graph or between epoch lines, and a silent minute looks like a hang."""
    done = threading.Event()
    begun = time.monotonic()

    def beat() -> None:
        while not done.wait(every_s):
            steps.note(f"still {doing}: {time.monotonic() - begun:.0f} s")

    thread = threading.Thread(target=beat, name="demo-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _quiet_tensorflow(settings: Settings) -> None:
    """No CUDA probing and no C++ or retracing chatter between the numbered steps (this process only).

    Set before TensorFlow is imported: it reads the variables once. A user's own values win.
    """
    import logging

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # cuInit failures, oneDNN and CPU-feature notes
    if settings.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a CPU run never asks the driver for a GPU
    # Retracing and similar warnings go through TensorFlow's Python logger, not the C++ one.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def _load_backend_quietly() -> None:
    """Import Keras (and TensorFlow) with stderr set aside: TensorFlow's C++ start-up notes (oneDNN, "Could
    not find cuda drivers", cuInit) are written before its log settings apply. Shown if the import fails."""
    import sys
    import tempfile

    if "keras" in sys.modules:
        return
    click.echo("loading Keras and TensorFlow (CPU) ...")  # 10-60 s on a busy 2-core machine
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink, _heartbeat(Steps(total=0), "loading Keras", HEARTBEAT_S):
        os.dup2(sink.fileno(), 2)
        try:
            import keras

            keras.ops.convert_to_tensor(0)  # the backend's first op loads the rest of its libraries
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _synthesize(steps: Steps, root: Path, scan: Synthesis) -> tuple[list[TruthRow], list[TruthRow]]:
    from training.synth.generate import generate

    def part(folder: str, studies: int, **extra: Any) -> list[TruthRow]:
        return generate(
            root / "synth" / folder,
            studies=studies,
            slices=scan.slices,
            classes=CLASS_NAMES,
            seed=scan.seed,
            size=scan.size,
            protocol=scan.protocol,
            lesion_scale=scan.lesion_scale,
            # UIDs from the seed: the split follows them, so the same seed trains the same model
            uid_entropy=f"kidneyct-demo:{scan.seed}",
            **extra,
        )

    train_rows = part(
        "train",
        scan.train_studies,
        progress=lambda done, total, cls: _every(
            steps, done, total, f"training study {done}/{total} ({cls})"
        ),
    )
    test_rows = part("test", scan.test_studies, first_number=scan.train_studies + 1)
    steps.note(f"{len(train_rows)} + {len(test_rows)} slices; truth in {root / 'synth' / '*' / 'truth.csv'}")
    return train_rows, test_rows


@contextmanager
def _listening(cfg: Settings) -> Iterator[tuple[sessionmaker[Session], int]]:
    """The database (migrated), the listener and its catalogue, for the duration of the block."""
    from prometheus_client import CollectorRegistry

    from ingest.catalog import start_catalog_thread
    from ingest.metrics import IngestMetrics
    from kidneyct.database import make_database, upgrade_schema
    from kidneyct.streams import make_publisher
    from kidneyct.wiring.ingest import build_catalog, build_listener

    upgrade_schema(cfg)
    sessions = make_database(cfg)
    publisher = make_publisher(cfg, sessions)
    listener = build_listener(cfg, publisher=publisher, metrics=IngestMetrics(CollectorRegistry()))
    listener.start()
    catalog_stop = threading.Event()
    catalog = start_catalog_thread(build_catalog(cfg, sessions), catalog_stop)
    try:
        yield sessions, listener.port
    finally:
        catalog_stop.set()
        catalog.join(timeout=30)
        listener.stop(grace_s=5.0)
        publisher.close()


def _run_command(cfg: Settings, command: click.Command, **options: Any) -> Any:
    """Run another `kidneyct` command on `cfg` in a context of its own (click fills the defaults of
    the options not given); the demo's own context is left as it is."""
    with click.Context(command, obj=cfg) as ctx:
        return ctx.invoke(command, **options)


def _label(cfg: Settings, sessions: sessionmaker[Session], labels: Path, train_rows: list[TruthRow]) -> None:
    """Wait for the catalogue, then label every training slice from the truth (`kidneyct label --csv`)."""
    from kidneyct.commands.label import label

    _wait_for_catalogue(sessions, {r.sop_instance_uid for r in train_rows}, timeout_s=120)
    with labels.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sop_instance_uid", "label", "source", "annotator"])
        for r in train_rows:
            writer.writerow([r.sop_instance_uid, r.slice_class, "demo-truth", "synthetic radiologist"])
    _run_command(cfg, label, csv_path=labels, source="demo-truth", annotator=None)


def _train(cfg: Settings, sessions: sessionmaker[Session], *, image_size: int, epochs: int, seed: int) -> str:
    """`kidneyct train` with CPU-friendly settings; the new candidate's version."""
    from kidneyct.commands.train import train

    _run_command(
        cfg,
        train,
        weights="none",
        backbone="tiny",  # seconds per epoch on a CPU (ResNet50 took minutes and learned less)
        image_size=image_size,
        epochs_phase1=epochs,
        epochs_phase2=0,
        lr_phase1=2e-3,
        lr_phase2=1e-5,
        batch_size=32,
        patience=8,  # a from-scratch validation score is noisy: stopping at 4 kept epoch 5 of one run
        unfreeze_from="conv4_",
        # A quarter of the studies for validation: the temperature, the study rule and the evidence
        # threshold are all chosen there, and a dozen studies cannot show 90 % accuracy among answered.
        val_fraction=0.25,
        test_fraction=0.15,
        latest_fraction=0.0,  # synthetic IDs carry no time: the demo's own test part is sent afterwards
        # Demo only: no refit on train + val. The served model is then the one the validation studies
        # never trained, so the thresholds chosen on them (temperature, evidence, shift) hold for it;
        # after a refit its validation scores are training scores, and a small model that fits its
        # training images closely flags a fifth of new ones as unlike them. Half the training time, too.
        refit=False,
        seed=seed,
        min_new_labels=0,
        random_split=False,
        no_augment=True,
        # Every synthetic study is an independent draw and the study key already keeps its
        # slices together; perceptual-hash links between look-alike phantoms would merge
        # studies into a few groups and leave the grouped split without a test part.
        phash_max_distance=-1,
        chain_min_correlation=0.9,
    )
    return _newest_candidate(sessions)


def _say_study_rule(steps: Steps, cfg: Settings, version: str) -> None:
    """Say which study rule (k, t) the demo's worker applies, when it abstains, and the demo-only choices:
    the rule and thresholds training chose on its validation studies, which the model card carries and
    the worker reads from it (the settings stay unset, so they do not override it)."""
    import json

    report = cfg.resolved_train_dir() / version / "report.json"
    try:
        grouped = json.loads(report.read_text())["grouped"]
    except (OSError, ValueError, KeyError, TypeError):
        grouped = {}
    rule = grouped.get("study_rule") if isinstance(grouped, dict) else None
    if not rule:
        steps.note("study rule: the model card has none; the worker uses the default (k = 2, t = 0.5)")
        return
    steps.note(
        f"study rule tuned on {rule['val_studies']} validation studies: k = {rule['k']}, t = {rule['t']} "
        "(in the model card; the worker applies it)"
    )
    for line in _abstention_lines(grouped.get("statements") or {}, rule.get("k")):
        steps.note(line)
    steps.note(
        "demo-only training choices: the tiny model, and no refit on train + validation (`--no-refit`), so "
        "the validation studies that set these thresholds are unseen by the served model"
    )


def _abstention_lines(statements: dict[str, Any], k: int | None = None) -> list[str]:
    """When the served model withholds an answer, as its training chose (the card's `decision`), and
    what its evidence is: the threshold means something only under the definition it was chosen on."""
    from classifier.study.evidence import LEGACY, describe_evidence
    from classifier.study.rule import StudyRule

    lines = []
    abstention = statements.get("abstention") or {}
    if abstention:
        target = abstention.get("target_accuracy", 0.0)
        if abstention.get("reached"):
            lines.append(
                f"indeterminate below evidence {abstention['min_evidence']:.2f}: on validation that answers "
                f"{abstention['val_coverage']:.0%} of studies, {abstention['val_accuracy_answered']:.0%} of "
                f"them right (target {target:.0%})"
            )
        else:
            lines.append(f"indeterminate always: no evidence threshold reached {target:.0%} on validation")
    shift = statements.get("shift") or {}
    test = (shift.get("flagged_share") or {}).get("test")
    if test:
        lines.append(
            f"and when over a quarter of a study's slices are unlike the training images (held-out test "
            f"slices flagged: {test['flagged']:.0%}; noise and non-CT images: all)"
        )
    if abstention:  # last, so the shift line still follows the threshold it adds to
        rule = StudyRule(int(k), 0.5) if k else None  # only k matters to the description
        lines.append(f"evidence: {describe_evidence(abstention.get('evidence', LEGACY), rule)}")
    return lines


def _classify_test_part(
    steps: Steps,
    cfg: Settings,
    sessions: sessionmaker[Session],
    port: int,
    root: Path,
    test_rows: list[TruthRow],
    version: str,
    slices: int,
) -> tuple[str, list[Any]]:
    """Run a worker, send the test part and wait for its study results; (the SQL, its rows)."""
    from prometheus_client import CollectorRegistry

    from classifier.worker.metrics import WorkerMetrics
    from kidneyct.serve import run_worker_when_model_active
    from kidneyct.wiring.classifier import build_worker

    wired = build_worker(cfg, sessions, metrics=WorkerMetrics(CollectorRegistry()))
    runner = wired.worker
    stop = threading.Event()
    failures: list[BaseException] = []
    thread = threading.Thread(
        target=run_worker_when_model_active, args=(runner, stop, 1.0, failures), daemon=True
    )
    thread.start()
    try:
        _send(steps, port, cfg.ae_title, root / "synth" / "test", test_rows)
        accessions = sorted({r.accession_number for r in test_rows})
        sql = STUDY_SQL.format(accessions=", ".join(f"'{a}'" for a in accessions))
        params = {"version": version, "slices": slices}
        return sql, _wait_for_results(sessions, sql, params, len(accessions), failures, timeout_s=600)
    finally:
        stop.set()
        runner.request_stop()
        thread.join()
        wired.close()


def _every(steps: Steps, done: int, total: int, line: str) -> None:
    if done == total or done % max(1, total // 8) == 0:
        steps.note(line)


def _send(
    steps: Steps, port: int, ae_title: str, folder: Path, rows: list[TruthRow], per_association: int = 1
) -> None:
    """C-STORE every study in `rows`, `per_association` studies per association (the training part goes
    in batches: fewer association set-ups, a small gain, 174-179 s against 183-186 s for 1,920 instances
    on a loaded box; the test part goes one study per association, as a modality sends it, so its
    release hints complete each study)."""
    from kidneyct.send_files import send_files

    by_study: dict[str, list[Path]] = {}
    for r in rows:
        by_study.setdefault(r.study_instance_uid, []).append(folder / r.path)
    studies = [sorted(set(paths)) for paths in by_study.values()]
    for start in range(0, len(studies), per_association):
        paths = [p for study in studies[start : start + per_association] for p in study]
        results = send_files("127.0.0.1", port, paths, called_ae=ae_title)
        failed = [r for r in results if not r.ok]
        done = min(start + per_association, len(studies))
        if failed:  # e.g. a DIMSE timeout on a loaded machine: once more, on a new association
            steps.note(
                f"studies up to {done}: {len(failed)} instance(s) not acknowledged; sending them again"
            )
            results = send_files("127.0.0.1", port, [r.path for r in failed], called_ae=ae_title)
            failed = [r for r in results if not r.ok]
        if failed:
            raise click.ClickException(
                f"{len(failed)} instance(s) refused, first status 0x{failed[0].status:04X}"
            )
        _every(steps, done, len(studies), f"study {done}/{len(studies)}: instances acknowledged")


def _wait_for_catalogue(sessions: sessionmaker[Session], expected: set[str], timeout_s: float) -> None:
    """Poll until every SOP Instance UID in `expected` has its instance row (the catalogue's work)."""
    from sqlalchemy import func, select

    from storage.db.tables import Instance

    deadline = time.monotonic() + timeout_s
    while True:
        with sessions() as session:
            found = session.scalar(
                select(func.count()).select_from(Instance).where(Instance.sop_instance_uid.in_(expected))
            )
        if found == len(expected):
            return
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"only {found} of {len(expected)} instances catalogued after {timeout_s:.0f} s"
            )
        time.sleep(0.5)


def _newest_candidate(sessions: sessionmaker[Session]) -> str:
    from storage.db.model_versions import list_model_versions

    with sessions() as session:
        candidates = list_model_versions(session, status="candidate")
    if not candidates:
        raise click.ClickException("training registered no candidate model version")
    return max(candidates, key=lambda v: v.created_at).version


def _wait_for_results(
    sessions: sessionmaker[Session],
    sql: str,
    params: dict[str, Any],
    n: int,
    failures: list[BaseException],
    timeout_s: float,
    complete_within_s: float = COMPLETE_WITHIN_S,
) -> list[Any]:
    """Poll until `n` studies have every slice classified, then up to `complete_within_s` more for the
    worker's sweep to mark them complete (the study's stable age after its last slice): a table of
    `complete = False` rows reads as unfinished. Rows still open after that are returned as they are."""
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    while True:
        if failures:
            raise click.ClickException(f"the worker failed: {failures[0]!r}")
        with sessions() as session:
            rows = list(session.execute(text(sql), params))
        if len(rows) >= n:
            settle_until = settle_until or time.monotonic() + complete_within_s
            if all(row.complete for row in rows) or time.monotonic() > settle_until:
                return rows
        elif time.monotonic() > deadline:
            raise click.ClickException(f"only {len(rows)} of {n} study results after {timeout_s:.0f} s")
        time.sleep(1.0 if settle_until is None else 0.25)


def _report(
    steps: Steps,
    root: Path,
    sql: str,
    version: str,
    slices: int,
    results: list,
    test_rows: list,
    scan: Synthesis,
) -> None:
    truth = {r.study_instance_uid: r.study_class for r in test_rows}
    click.echo(f"\n-- the SQL a reporting system would run (here :version = {version!r}, :slices = {slices})")
    click.echo(sql + ";\n")
    click.echo(
        f"{'ACCESSION':<16} {'TRUE':<7} {'PREDICTED':<9} {'P(CYST)':>7} {'P(NORMAL)':>9} {'P(STONE)':>8} {'P(TUMOR)':>8} {'SLICES':>6} COMPLETE WHY INDETERMINATE"
    )
    correct = 0
    pairs = []
    for row in results:
        expected = truth[row.study_instance_uid]
        correct += row.label == expected
        pairs.append((expected, row.label))
        click.echo(
            f"{row.accession_number:<16} {expected:<7} {row.label or 'indeterm.':<9} {row.p_cyst:7.2f} {row.p_normal:9.2f} "
            f"{row.p_stone:8.2f} {row.p_tumor:8.2f} {row.n_instances:6d} {bool(row.complete)!s:<8} "
            f"{row.indeterminate_reason or ''}"
        )
    accuracy = correct / len(results)
    answered = sum(row.label is not None for row in results)
    click.secho(
        f"\nstudy-level accuracy against the synthetic truth: {correct}/{len(results)} = {accuracy:.0%}"
        f" ({answered} answered, {correct}/{answered or 1} of them right; {len(results) - answered} "
        "indeterminate, label NULL in SQL; chance is 1 in 4)",
        bold=True,
    )
    plots = root / "plots"
    _plot_confusion(plots / "demo-confusion.png", pairs)
    from training.synth.montage import save_montage

    # Phantoms as this run made them: its seed, protocol and lesion size (the lesions the model learned).
    save_montage(
        plots / "synthetic-examples.png",
        seed=scan.seed,
        protocol=scan.protocol,
        lesion_scale=scan.lesion_scale,
    )
    for line in _made_files(plots, root / "data" / "runs" / version):
        steps.note(line)
    log.info(
        "demo_finished",
        accuracy=accuracy,
        studies=len(results),
        model_version=version,
        at=dt.datetime.now(dt.UTC).isoformat(),
    )


def _made_files(plots: Path, run_dir: Path) -> list[str]:
    """What the demo tells the user to open: only files that are there, and why Grad-CAM may not be."""
    lines = [f"plots: {', '.join(p.name for p in sorted(plots.glob('*.png')))} in {plots}"]
    figures = sorted(p.name for p in run_dir.glob("*.png"))
    if figures:
        lines.append(f"training report: {run_dir / 'report.md'} with {', '.join(figures)}")
    if not (run_dir / "gradcam.png").exists():
        lines.append(
            "no Grad-CAM picture: at the demo's small input the last feature map is 1x1 "
            "(train with --image-size 64 or more for heat maps)"
        )
    return lines


def _plot_confusion(path: Path, pairs: list[tuple[str, str | None]]) -> None:
    """The study-level confusion matrix of the answered studies, drawn by the trainer's plot (same look,
    same contrast rule); the title counts the indeterminate ones (label NULL), which have no column."""
    import numpy as np

    from training import plots as training_plots

    matrix = np.zeros((len(CLASS_NAMES), len(CLASS_NAMES)), dtype=int)
    withheld = 0
    for expected, predicted in pairs:
        if predicted is None:
            withheld += 1
            continue
        matrix[CLASS_NAMES.index(expected), CLASS_NAMES.index(predicted)] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    training_plots.confusion(
        matrix.tolist(),
        CLASS_NAMES,
        path,
        f"demo: answered test studies\n({withheld} of {len(pairs)} indeterminate, not shown)",
        xlabel="predicted (study)",
        ylabel="true (synthetic)",
    )


def _promote_for_demo(cfg: Settings, version: str) -> None:
    """Promote through the real gate; a candidate it refuses (a few CPU minutes on synthetic phantoms
    rarely beat the baselines by more than the uncertainty) is forced with a recorded reason, so the
    demo still shows the rest of the loop and the user sees the gate's verdict first."""
    from kidneyct.commands.models_promote import promote_command

    try:
        _run_command(cfg, promote_command, version=version, force=False)
    except click.ClickException as refused:
        click.echo(f"the promotion gate said: {refused.format_message()}")
        _run_command(
            cfg,
            promote_command,
            version=version,
            force=True,
            reason="kidneyct demo: synthetic data, forced to show the loop end to end",
        )
