"""`kidneyct review` as the installed command: HTTPS directly, and behind a reverse proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from sqlalchemy import select

import migrations
from review import accounts
from storage.db.engine import make_engine, make_session_factory
from storage.db.tables import ReviewAudit
from tests.ingest_support import make_certificates
from tests.review_kit import NOW, free_port, kidneyct_review


def _data_dir(tmp_path: Path) -> tuple[str, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'kidneyct.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    with make_session_factory(engine).begin() as session:
        accounts.add_user(
            session, username="dr.reader", password="correct horse battery", role="reader", now=NOW
        )
    engine.dispose()
    env = {
        "KIDNEYCT_DATA_DIR": str(tmp_path),
        "KIDNEYCT_DATABASE_URL": url,
        "KIDNEYCT_REVIEW_SECRET_KEY": "serve-test-" + "s" * 40,
        "KIDNEYCT_LOG_FORMAT": "json",
    }
    return url, env


def _token(page: str) -> str:
    return page.split('name="csrf_token" value="')[1].split('"')[0]


def test_https_directly_with_secure_cookies(tmp_path: Path) -> None:
    """With a certificate and key the app speaks TLS (verified against its CA) and cookies are Secure."""
    certs = make_certificates(tmp_path / "tls")
    _, env = _data_dir(tmp_path)
    port = free_port()
    env.update(
        KIDNEYCT_REVIEW_PORT=str(port),
        KIDNEYCT_REVIEW_TLS_CERT=str(certs.server_cert),
        KIDNEYCT_REVIEW_TLS_KEY=str(certs.server_key),
    )
    base = f"https://127.0.0.1:{port}"
    with (
        kidneyct_review(env, tmp_path / "review.log", f"{base}/healthz"),
        httpx.Client(base_url=base, verify=str(certs.ca)) as client,
    ):
        page = client.get("/signin")
        cookie = page.headers["set-cookie"].lower()
        assert page.status_code == 200 and "secure" in cookie and "httponly" in cookie
        signed_in = client.post(
            "/signin",
            data={
                "username": "dr.reader",
                "password": "correct horse battery",
                "csrf_token": _token(page.text),
            },
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"


def test_a_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    """One clear line, exit status 1, nothing served."""
    certs = make_certificates(tmp_path / "tls")
    _, env = _data_dir(tmp_path)
    env.update(KIDNEYCT_REVIEW_PORT=str(free_port()), KIDNEYCT_REVIEW_TLS_CERT=str(certs.server_cert))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kidneyct"), "review"],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "KIDNEYCT_REVIEW_TLS_KEY is not" in result.stderr


def test_behind_a_proxy_the_forwarded_address_is_audited(tmp_path: Path) -> None:
    """With the proxy trusted, throttling and the audit see the browser's address, not the proxy's."""
    url, env = _data_dir(tmp_path)
    port = free_port()
    env.update(KIDNEYCT_REVIEW_PORT=str(port), KIDNEYCT_REVIEW_FORWARDED_ALLOW_IPS="127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    headers = {"X-Forwarded-For": "10.1.2.3", "X-Forwarded-Proto": "https"}
    with (
        kidneyct_review(env, tmp_path / "review.log", f"{base}/healthz"),
        httpx.Client(base_url=base, headers=headers) as client,
    ):
        page = client.get("/signin")
        failed = client.post(
            "/signin",
            data={
                "username": "dr.reader",
                "password": "wrong password!",
                "csrf_token": _token(page.text),
            },
        )
        assert failed.status_code == 401
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            assert (
                session.scalar(select(ReviewAudit.address).where(ReviewAudit.action == "sign_in_failed"))
                == "10.1.2.3"
            )
    finally:
        engine.dispose()
