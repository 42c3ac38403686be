"""`kidneyct review` (the review web app) and `kidneyct users` (its accounts): wiring only."""

from __future__ import annotations

import datetime as dt
import secrets
import sys

import click
import structlog
from prometheus_client import CollectorRegistry

from kidneyct.archives import build_archive_reader
from kidneyct.database import open_database
from kidneyct.settings import Settings

log = structlog.get_logger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@click.command(short_help="Serve the review station (worklist, verdicts, monitoring).")
@click.pass_obj
def review(settings: Settings) -> None:
    """Serve the review station: worklist, study pages, verdicts, monitoring (docs/review.md)."""
    import uvicorn

    from common.runtime import metrics_endpoint
    from review.app import create_app, has_indeterminate_column
    from review.audit import Throttle
    from review.config import ReviewConfig
    from review.metrics import ReviewCollector

    sessions = open_database(settings, migrate_embedded=True)
    tls = settings.review_tls_cert is not None
    if tls and settings.review_tls_key is None:
        raise click.ClickException("KIDNEYCT_REVIEW_TLS_CERT is set but KIDNEYCT_REVIEW_TLS_KEY is not")
    if settings.review_secret_key is None:
        log.warning(
            "review_secret_key_generated", why="KIDNEYCT_REVIEW_SECRET_KEY unset: sessions end at restart"
        )
    indeterminate = has_indeterminate_column(sessions)
    config = ReviewConfig(
        secret_key=settings.review_secret_key.get_secret_value()
        if settings.review_secret_key
        else secrets.token_urlsafe(48),
        secure_cookies=settings.review_secure_cookies or tls,
        identifier=settings.review_identifier,
        page_size=settings.review_page_size,
        session_max_age_s=settings.review_session_max_age_s,
        throttle=Throttle(
            max_per_account=settings.review_signin_max_failures,
            max_per_address=settings.review_signin_max_failures_per_address,
            window_s=settings.review_signin_window_s,
        ),
        indeterminate_recorded=indeterminate,
    )
    app = create_app(sessions, config, build_archive_reader(settings))
    registry = CollectorRegistry()
    registry.register(ReviewCollector(sessions, indeterminate_recorded=indeterminate))
    with metrics_endpoint(registry, host=settings.metrics_host, port=settings.metrics_port):
        log.info("review_started", host=settings.review_host, port=settings.review_port, tls=tls)
        uvicorn.run(
            app,
            host=settings.review_host,
            port=settings.review_port,
            ssl_certfile=str(settings.review_tls_cert) if tls else None,
            ssl_keyfile=str(settings.review_tls_key) if tls else None,
            proxy_headers=bool(settings.review_forwarded_allow_ips),
            forwarded_allow_ips=settings.review_forwarded_allow_ips or None,
            access_log=False,  # the app logs `request_served` without paths (no patient data)
            log_config=None,
            server_header=False,
        )


@click.group(short_help="Add, remove, list review accounts; set passwords.")
def users() -> None:
    """Accounts of the review station (roles: reader, admin)."""


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


def _run(settings: Settings, work: object) -> object:
    from review.accounts import AccountError
    from review.passwords import WeakPassword

    sessions = open_database(settings, migrate_embedded=True)
    try:
        with sessions.begin() as session:
            return work(session)  # type: ignore[operator]
    except (AccountError, WeakPassword) as exc:
        raise click.ClickException(str(exc)) from None


@users.command("add")
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice(["reader", "admin"]),
    default="reader",
    show_default=True,
    help="reader: review and record verdicts; admin: also manage accounts.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_obj
def users_add(settings: Settings, username: str, role: str, password_stdin: bool) -> None:
    """Add an account."""
    from review import accounts, audit

    password, now = _password(password_stdin), _now()

    def add(session: object) -> None:
        accounts.add_user(session, username=username, password=password, role=role, now=now)  # type: ignore[arg-type]
        audit.record(session, action="user_added", now=now, detail=f"{username} ({role}) by kidneyct users")  # type: ignore[arg-type]

    _run(settings, add)
    click.echo(f"added {username} ({role})")


@users.command("remove")
@click.argument("username")
@click.pass_obj
def users_remove(settings: Settings, username: str) -> None:
    """Remove an account (its verdicts and audit rows stay)."""
    from review import accounts, audit

    now = _now()

    def remove(session: object) -> None:
        accounts.remove_user(session, username=username)  # type: ignore[arg-type]
        audit.record(session, action="user_removed", now=now, detail=f"{username} by kidneyct users")  # type: ignore[arg-type]

    _run(settings, remove)
    click.echo(f"removed {username}")


@users.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_obj
def users_passwd(settings: Settings, username: str, password_stdin: bool) -> None:
    """Set an account's password."""
    from review import accounts, audit

    password, now = _password(password_stdin), _now()

    def change(session: object) -> None:
        accounts.set_password(session, username=username, password=password, now=now)  # type: ignore[arg-type]
        audit.record(session, action="password_changed", now=now, detail=f"{username} by kidneyct users")  # type: ignore[arg-type]

    _run(settings, change)
    click.echo(f"password of {username} changed")


@users.command("list")
@click.pass_obj
def users_list(settings: Settings) -> None:
    """List the accounts."""
    from review import accounts

    found = _run(settings, accounts.list_users)
    for account in found:  # type: ignore[attr-defined]
        click.echo(f"{account.username}\t{account.role}\t{account.created_at:%Y-%m-%d}")
