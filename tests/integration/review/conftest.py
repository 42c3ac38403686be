"""A migrated database (SQLite and PostgreSQL) with two completed studies, a reader, an admin, and the app."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from starlette.testclient import TestClient

from review import accounts
from review.app import create_app
from review.audit import Throttle
from review.config import ReviewConfig
from storage.archive.reader import ArchiveReader
from storage.db.engine import make_engine, make_session_factory
from tests.review_kit import NOW, add_model, completed_study

PASSWORD = "correct horse battery"


@dataclass
class ReviewSite:
    sessions: sessionmaker[Session]
    archive_dir: Path
    study_ids: list[int]
    config: ReviewConfig

    def client(self) -> TestClient:
        return TestClient(create_app(self.sessions, self.config, ArchiveReader(self.archive_dir)))


@pytest.fixture
def site(migrated_database_url: str, tmp_path: Path) -> Iterator[ReviewSite]:
    engine = make_engine(migrated_database_url)
    sessions = make_session_factory(engine)
    archive = tmp_path / "archive"
    with sessions.begin() as session:
        model = add_model(session, "v1")
        first = completed_study(session, archive, model=model, number=1, label="Stone", completed_at=NOW)
        second = completed_study(
            session, archive, model=model, number=2, label="Tumor", completed_at=NOW + dt.timedelta(hours=1)
        )
        accounts.add_user(session, username="reader", password=PASSWORD, role="reader", now=NOW)
        accounts.add_user(session, username="admin", password=PASSWORD, role="admin", now=NOW)
        ids = [first.id, second.id]
    config = ReviewConfig(secret_key="test-secret-" + "x" * 32, throttle=Throttle(3, 10, 900), page_size=50)
    yield ReviewSite(sessions, archive, ids, config)
    engine.dispose()


def sign_in(client: TestClient, username: str = "reader", password: str = PASSWORD) -> int:
    """Sign in through the form (its CSRF token included); the response's status."""
    page = client.get("/signin")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    response = client.post(
        "/signin",
        data={"username": username, "password": password, "csrf_token": token},
        follow_redirects=False,
    )
    return response.status_code


def csrf_of(client: TestClient, path: str = "/") -> str:
    return client.get(path).text.split('name="csrf_token" value="')[1].split('"')[0]
