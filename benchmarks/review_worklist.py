"""Time per worklist request with 10,000 completed studies, against baselines measured in the same run.

Fills a fresh database (SQLite by default, or --database-url, e.g. a scratch PostgreSQL database)
with N complete study results, a report revision each, and verdicts on every third study; signs a
reader in through the real app (Starlette's TestClient, the whole middleware and template stack, no
network) and times:

- baseline: a bare `SELECT count(*) FROM study_predictions` and GET /healthz (the app's fixed cost);
- the worklist: first page, unreviewed, disagree, one model version, a date range, a page deep in
  the list (keyset cursor).

    python benchmarks/review_worklist.py --studies 10000 --repeat 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, text
from starlette.testclient import TestClient

import migrations
from common.log import configure_logging
from common.vocabulary import CLASS_NAMES
from review import accounts
from review.app import create_app
from review.config import ReviewConfig
from storage.archive.reader import ArchiveReader
from storage.db.engine import make_engine, make_session_factory
from storage.db.tables import ModelVersion, ResultReport, ReviewVerdict, Study, StudyPrediction

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PASSWORD = "benchmark password"


def fill(url: str, n: int) -> None:
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        versions = []
        for i, name in enumerate(("2026.01", "2026.06")):
            row = ModelVersion(
                version=name,
                artifact_uri="file:///m",
                sha256="0" * 64,
                card={},
                metrics={},
                status="active" if i else "retired",
                created_at=START,
            )
            session.add(row)
            session.flush()
            versions.append(row.id)
        studies = [
            {
                "study_instance_uid": f"1.2.826.0.1.3680043.10.{i}",
                "accession_number": f"ACC{i:08d}",
                "first_received_at": START + dt.timedelta(minutes=i),
                "last_received_at": START + dt.timedelta(minutes=i),
            }
            for i in range(n)
        ]
        session.execute(insert(Study), studies)
        ids = list(session.scalars(select(Study.id).order_by(Study.id)))
        predictions, reports, verdicts = [], [], []
        for i, study_id in enumerate(ids):
            label = CLASS_NAMES[i % 4]
            at = START + dt.timedelta(minutes=i, seconds=70)
            version = versions[1] if i > n // 2 else versions[0]
            predictions.append(
                {
                    "study_id": study_id,
                    "model_version_id": version,
                    "label": label,
                    **{f"p_{c.lower()}": (0.85 if c == label else 0.05) for c in CLASS_NAMES},
                    **{f"n_{c.lower()}": 0 for c in CLASS_NAMES},
                    "n_instances": 40,
                    "complete": True,
                    "completed_at": at,
                    "updated_at": at,
                    "shadow": False,
                }
            )
            reports.append(
                {
                    "study_id": study_id,
                    "model_version_id": version,
                    "revision": 1,
                    "label": label,
                    "key_slices": "",
                    "created_at": at,
                }
            )
            if i % 3 == 0:
                verdicts.append(
                    {
                        "study_id": study_id,
                        "model_version_id": version,
                        "ai_label": label,
                        "verdict": "correct" if i % 9 == 0 else "confirm",
                        "label": CLASS_NAMES[(i + 1) % 4] if i % 9 == 0 else label,
                        "username": "reader",
                        "created_at": at + dt.timedelta(hours=1),
                    }
                )
        session.execute(insert(StudyPrediction), predictions)
        session.execute(insert(ResultReport), reports)
        session.execute(insert(ReviewVerdict), verdicts)
        accounts.add_user(session, username="reader", password=PASSWORD, role="reader", now=START)
    if url.startswith("postgresql"):
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    engine.dispose()


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, float]:
    call()  # warm: templates compiled, statements cached
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def signed_in(client: TestClient) -> None:
    page = client.get("/signin").text
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post(
        "/signin",
        data={"username": "reader", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.status_code


def run(url: str, studies: int, repeat: int) -> list[tuple[str, float, float]]:
    fill(url, studies)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    client = TestClient(create_app(sessions, ReviewConfig(secret_key="b" * 48), ArchiveReader(Path("."))))
    signed_in(client)

    def get(path: str) -> Callable[[], Any]:
        def call() -> None:
            response = client.get(path)
            assert response.status_code == 200 and "<table" in response.text

        return call

    def count() -> None:
        with engine.connect() as connection:
            connection.execute(select(func.count()).select_from(StudyPrediction)).scalar_one()

    first = client.get("/").text
    deep = first
    for _ in range(50):  # 50 pages of 50 rows: row 2,500 onwards
        deep_link = deep.split('id="next-page" href="')[1].split('"')[0].replace("&amp;", "&")
        deep = client.get(deep_link).text
    cases = [
        ("baseline: SELECT count(*) FROM study_predictions", count),
        ("baseline: GET /healthz", lambda: client.get("/healthz")),
        ("GET / (first page, 50 rows)", get("/")),
        ("GET /?unreviewed=1", get("/?unreviewed=1")),
        ("GET /?disagree=1", get("/?disagree=1")),
        ("GET /?model_version=2026.01", get("/?model_version=2026.01")),
        ("GET /?from=2026-01-03&to=2026-01-04", get("/?from=2026-01-03&to=2026-01-04")),
        ("GET / page 51 (keyset cursor)", get(deep_link)),
    ]
    results = [(name, *timed(call, repeat)) for name, call in cases]
    engine.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url", default=None, help="an empty database (default: a new SQLite file)")
    args = parser.parse_args()
    configure_logging(fmt="json", level="warning")  # the access log would time the terminal
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrations.upgrade(url)
        results = run(url, args.studies, args.repeat)
    print(
        f"{args.studies} studies, {args.repeat} requests each, {url.split(':')[0]}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print("| request | median ms | p95 ms |\n| --- | ---: | ---: |")
    for name, median, p95 in results:
        print(f"| {name} | {median:.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
