"""The review station in a real browser: Debian's chromium, headless, driven by selenium, against
`kidneyct review` started as the installed command on the embedded default (SQLite).

Sign in, open the worklist, open a study, correct it; the label is in SQL and the training set
query (`training.trainset.collect_sources`, what `kidneyct train` reads) counts it. Each page is
saved as a PNG: under tmp_path, or under $KIDNEYCT_TEST_SCREENSHOTS (docs/review/ holds a committed set).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

import migrations
from review import accounts
from storage.db.engine import make_engine, make_session_factory
from storage.db.tables import Label, Study
from tests.conftest import missing_service
from tests.review_kit import NOW, add_model, completed_study, free_port, kidneyct_review
from training.trainset import collect_sources

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Served:
    base: str
    url: str
    ids: list[int]
    metrics: str
    log: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A data dir with three completed studies and a reader; `kidneyct review` serving it (and its metrics)."""
    url = f"sqlite:///{tmp_path / 'kidneyct.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    archive = tmp_path / "archive"
    with make_session_factory(engine).begin() as session:
        model = add_model(session, "2026.11-resnet")
        ids = [
            completed_study(
                session,
                archive,
                model=model,
                number=n,
                label=label,
                completed_at=NOW.replace(hour=8 + n),
                size=256,
            ).id
            for n, label in ((1, "Stone"), (2, "Tumor"), (3, "Normal"))
        ]
        accounts.add_user(session, username="dr.reader", password=PASSWORD, role="reader", now=NOW)
    engine.dispose()
    port, metrics_port = free_port(), free_port()
    env = dict(
        KIDNEYCT_DATA_DIR=str(tmp_path),
        KIDNEYCT_DATABASE_URL=url,
        KIDNEYCT_ARCHIVE_DIR=str(archive),
        KIDNEYCT_REVIEW_PORT=str(port),
        KIDNEYCT_METRICS_PORT=str(metrics_port),
        KIDNEYCT_REVIEW_SECRET_KEY="browser-test-" + "k" * 40,
        KIDNEYCT_LOG_FORMAT="json",
    )
    base = f"http://127.0.0.1:{port}"
    with kidneyct_review(env, tmp_path / "review.log", f"{base}/healthz"):
        yield Served(base, url, ids, f"http://127.0.0.1:{metrics_port}/metrics", tmp_path / "review.log")


@pytest.fixture
def browser() -> Iterator[object]:
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        missing_service("chromium or chromedriver missing: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1360,1000",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _shot(driver: object, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("KIDNEYCT_TEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.set_window_size(1360, 700)  # type: ignore[attr-defined]
    height = driver.execute_script("return document.documentElement.scrollHeight")  # type: ignore[attr-defined]
    driver.set_window_size(1360, max(700, min(int(height) + 160, 2600)))  # type: ignore[attr-defined]
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path


def _images_loaded(driver: object) -> bool:
    return bool(
        driver.execute_script(  # type: ignore[attr-defined]
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
    )


@pytest.mark.slow
def test_sign_in_worklist_study_correct_and_the_trainer_counts_it(
    served: Served, browser: object, tmp_path: Path
) -> None:
    """The whole reader's path in Chromium; the correction is a radiologist label in the training set."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    base, url, ids = served.base, served.url, served.ids
    driver: object = browser
    find = driver.find_element  # type: ignore[attr-defined]
    driver.get(f"{base}/")  # type: ignore[attr-defined]
    assert driver.current_url.endswith("/signin")  # type: ignore[attr-defined]
    find(By.ID, "username").send_keys("dr.reader")
    find(By.ID, "password").send_keys(PASSWORD)
    _shot(driver, "01-signin", tmp_path)
    find(By.ID, "signin").click()
    WebDriverWait(driver, 20).until(lambda d: d.current_url == f"{base}/")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.worklist tbody tr")  # type: ignore[attr-defined]
    assert len(rows) == 3 and "Normal" in rows[0].text and "Stone" in rows[2].text
    _shot(driver, "02-worklist", tmp_path)

    rows[2].find_element(By.TAG_NAME, "a").click()
    WebDriverWait(driver, 20).until(lambda d: f"/studies/{ids[0]}" in d.current_url and _images_loaded(d))
    assert len(driver.find_elements(By.CSS_SELECTOR, ".stack img.overlay")) == 2  # type: ignore[attr-defined]
    assert find(By.CSS_SELECTOR, ".stack img.overlay").is_displayed()
    _shot(driver, "03-study-heatmap", tmp_path)
    find(By.CSS_SELECTOR, "label[for=heatmap-toggle]").click()
    assert not find(By.CSS_SELECTOR, ".stack img.overlay").is_displayed()
    _shot(driver, "04-study-plain", tmp_path)

    Select(find(By.ID, "correct-label")).select_by_visible_text("Cyst")
    find(By.ID, "comment").send_keys("simple cyst, no stone")
    find(By.ID, "correct").click()
    WebDriverWait(driver, 20).until(lambda d: "saved=1" in d.current_url)
    assert "Verdict saved" in find(By.TAG_NAME, "body").text
    _shot(driver, "05-study-corrected", tmp_path)

    driver.get(f"{base}/studies/{ids[1]}")  # type: ignore[attr-defined]
    find(By.ID, "confirm").click()
    WebDriverWait(driver, 20).until(lambda d: "saved=1" in d.current_url)
    driver.get(f"{base}/")  # type: ignore[attr-defined]
    assert "correct (Cyst)" in find(By.TAG_NAME, "body").text
    _shot(driver, "06-worklist-after", tmp_path)

    driver.get(f"{base}/monitoring")  # type: ignore[attr-defined]
    assert "agreement 50.0 %" in find(By.TAG_NAME, "body").text
    _shot(driver, "07-monitoring", tmp_path)

    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            uid = session.scalar(select(Study.study_instance_uid).where(Study.id == ids[0]))
            label = session.scalar(select(Label).where(Label.study_instance_uid == uid))
            assert label is not None and (label.label, label.source, label.annotator) == (
                "Cyst",
                "radiologist",
                "dr.reader",
            )
            counted = [item for item in collect_sources(session) if item.label == "Cyst"]
            assert len(counted) == 3  # every slice of the corrected study
    finally:
        engine.dispose()

    with urllib.request.urlopen(served.metrics, timeout=10) as response:
        metrics = response.read().decode()
    assert 'kidneyct_review_agreement_ratio{model_version="2026.11-resnet"} 0.5' in metrics
    assert "kidneyct_review_unreviewed_studies 1.0" in metrics

    events = [json.loads(line) for line in served.log.read_text().splitlines() if line.startswith("{")]
    served_events = [e for e in events if e.get("event") == "request_served"]
    assert served_events and {e["route"] for e in served_events} >= {"/", "/studies/{study_id:int}"}
    log_text = served.log.read_text()
    assert (
        "SYN000" not in log_text and "/studies/1" not in log_text and "GET /" not in log_text
    )  # no uvicorn access log
