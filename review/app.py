"""The review web app: routes, sessions, templates, static files, and an access log without patient data.

`create_app` takes what it needs (sessions, config, archive reader); `kidneyct review` builds them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import inspect
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from review import pages
from review.config import ReviewConfig
from review.guards import access_of
from storage.archive.reader import ArchiveReader

HERE = Path(__file__).resolve().parent
COOKIE = "kidneyct_review"
log = structlog.get_logger(__name__)

ROUTES = [
    Route("/signin", pages.signin_form, methods=["GET"]),
    Route("/signin", pages.signin, methods=["POST"]),
    Route("/signout", pages.signout, methods=["POST"]),
    Route("/healthz", pages.healthz, methods=["GET"]),
    Route("/", pages.worklist, methods=["GET"]),
    Route("/studies/{study_id:int}", pages.study, methods=["GET"]),
    Route("/studies/{study_id:int}/slices/{index:int}.png", pages.slice_image, methods=["GET"]),
    Route("/studies/{study_id:int}/slices/{index:int}/heatmap.png", pages.heatmap_image, methods=["GET"]),
    Route("/studies/{study_id:int}/verdict", pages.give_verdict, methods=["POST"]),
    Route("/monitoring", pages.monitoring_page, methods=["GET"]),
    Route("/admin/users", pages.users_page, methods=["GET"]),
    Route("/admin/users", pages.add_user, methods=["POST"]),
    Route("/admin/users/{username}/remove", pages.remove_user, methods=["POST"]),
    Route("/admin/audit", pages.audit_page, methods=["GET"]),
]


class AccessLog:
    """One `request_served` event per request: method, route template, status, time; never the
    concrete path or query (a query may carry a date, a path a study's row id)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            log.info(
                "request_served",
                method=scope["method"],
                route=getattr(
                    route, "path", "static" if scope["path"].startswith("/static/") else "unmatched"
                ),
                status=status[0],
                ms=round((time.perf_counter() - started) * 1000, 1),
            )


SECURITY_HEADERS = [
    # Only our own files; inline style attributes are used (indentation of the SR), no script at all.
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),  # pages and images of patients stay out of shared caches
]


class SecurityHeaders:
    """The same protective headers on every response (static files included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, sending)


def has_indeterminate_column(sessions: sessionmaker[Session]) -> bool:
    """Whether `study_predictions.indeterminate_reason` exists (migration 0014_statements; always at head)."""
    with sessions() as session:
        columns = inspect(session.get_bind()).get_columns("study_predictions")
    return any(c["name"] == "indeterminate_reason" for c in columns)


def create_app(sessions: sessionmaker[Session], config: ReviewConfig, archive: ArchiveReader) -> Starlette:
    middleware = [
        Middleware(AccessLog),
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=config.secret_key,
            session_cookie=COOKIE,
            max_age=config.session_max_age_s,
            same_site="lax",
            https_only=config.secure_cookies,
        ),
    ]
    routes: list[Any] = [*ROUTES, Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.sessions = sessions
    app.state.config = config
    app.state.archive = archive
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    return app


def access_table() -> list[tuple[str, str, str]]:
    """(method, path, access) of every route: the table docs/review.md shows and the tests check."""
    rows = [
        (m, r.path, access_of(r.endpoint) or "?")
        for r in ROUTES
        for m in sorted(r.methods or ())
        if m != "HEAD"
    ]
    return [*rows, ("GET", "/static/...", "public (the app's CSS)")]
