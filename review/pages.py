"""The review app's endpoints: sign-in, worklist, study, slice images, verdicts, monitoring, accounts.

Database and image work runs in Starlette's thread pool; every endpoint declares its access.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from common.vocabulary import CLASS_NAMES
from review import accounts, audit
from review.guards import access, client_address, csrf_token
from review.images import NoImage, pmap_overlay_png, sc_overlay_png, slice_png
from review.monitoring import monitoring
from review.sr_text import sr_lines
from review.study import StudyView, study_view
from review.verdicts import InvalidVerdict, parse_verdict, record_verdict
from review.worklist import Cursor, Filters, worklist_page

T = TypeVar("T")
PNG_HEADERS = {"Cache-Control": "private, no-store"}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _db(request: Request, work: Callable[[Any], T], *, commit: bool = False) -> T:
    sessions = request.app.state.sessions

    def run() -> T:
        with sessions.begin() if commit else sessions() as session:
            return work(session)

    return await run_in_threadpool(run)


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.update(request=request, csrf=csrf_token(request), account=getattr(request.state, "account", None))
    return request.app.state.templates.TemplateResponse(request, template, context, status_code=status_code)


# --- sign-in -------------------------------------------------------------------------------------


@access("public")
async def signin_form(request: Request) -> Response:
    return _page(request, "signin.html", error=None)


@access("public")
async def signin(request: Request) -> Response:
    form = await request.form()
    username, password = str(form.get("username", ""))[:64], str(form.get("password", ""))
    address, config, now = client_address(request), request.app.state.config, _now()

    def check(session: Any) -> tuple[str, accounts.Account | None]:
        if audit.throttled(session, throttle=config.throttle, username=username, address=address, now=now):
            audit.record(session, action="sign_in_throttled", now=now, username=username, address=address)
            return "throttled", None
        account = accounts.authenticate(session, username=username, password=password)
        action = "sign_in" if account is not None else "sign_in_failed"
        audit.record(session, action=action, now=now, username=username, address=address)
        return ("ok" if account else "failed"), account

    outcome, account = await _db(request, check, commit=True)
    if outcome == "throttled":
        return _page(request, "signin.html", 429, error="Too many failed sign-ins: wait and try again.")
    if account is None:
        return _page(request, "signin.html", 401, error="Wrong user name or password.")
    request.session.clear()  # a new session (and CSRF token) at sign-in: no fixation
    request.session.update(user=account.username)
    csrf_token(request)
    return RedirectResponse("/", status_code=303)


@access("reader")
async def signout(request: Request) -> Response:
    username, address, now = request.state.account.username, client_address(request), _now()
    await _db(
        request,
        lambda s: audit.record(s, action="sign_out", now=now, username=username, address=address),
        commit=True,
    )
    request.session.clear()
    return RedirectResponse("/signin", status_code=303)


@access("public")
async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


# --- worklist ------------------------------------------------------------------------------------


def _date(value: str | None) -> dt.date | None:
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def filters_of(request: Request) -> Filters:
    q = request.query_params
    return Filters(
        unreviewed=q.get("unreviewed") == "1",
        indeterminate=q.get("indeterminate") == "1",
        disagree=q.get("disagree") == "1",
        model_version=q.get("model_version") or None,
        date_from=_date(q.get("from")),
        date_to=_date(q.get("to")),
    )


@access("reader")
async def worklist(request: Request) -> Response:
    config, filters = request.app.state.config, filters_of(request)
    cursor = Cursor.parse(request.query_params.get("after", ""))
    page = await _db(
        request,
        lambda s: worklist_page(
            s,
            filters=filters,
            cursor=cursor,
            page_size=config.page_size,
            identifier=config.identifier,
            has_indeterminate=config.indeterminate_recorded,
        ),
    )
    query = {k: v for k, v in request.query_params.items() if k != "after"}
    return _page(
        request,
        "worklist.html",
        page=page,
        filters=filters,
        query=query,
        classes=CLASS_NAMES,
        indeterminate_recorded=config.indeterminate_recorded,
    )


# --- study ---------------------------------------------------------------------------------------


async def _study(request: Request, *, audited: bool) -> StudyView | None:
    study_id, identifier = int(request.path_params["study_id"]), request.app.state.config.identifier
    username, address, now = request.state.account.username, client_address(request), _now()

    def load(session: Any) -> StudyView | None:
        view = study_view(session, study_id=study_id, identifier=identifier)
        if view is not None and audited:
            audit.record(
                session, action="study_viewed", now=now, username=username, address=address, study_id=study_id
            )
        return view

    return await _db(request, load, commit=audited)


@access("reader")
async def study(request: Request) -> Response:
    view = await _study(request, audited=True)
    if view is None:
        return PlainTextResponse("no complete result for this study", status_code=404)
    sr = sr_lines(view.objects["sr"][0]) if "sr" in view.objects else []
    heatmap = "pmap" if "pmap" in view.objects else "sc" if "sc" in view.objects else None
    return _page(
        request,
        "study.html",
        view=view,
        sr=sr,
        heatmap=heatmap,
        classes=CLASS_NAMES,
        saved=request.query_params.get("saved") == "1",
    )


def _slice_index(request: Request, view: StudyView) -> int | None:
    index = int(request.path_params["index"])
    return index if 0 <= index < len(view.key_slices) else None


@access("reader")
async def slice_image(request: Request) -> Response:
    view = await _study(request, audited=False)
    index = _slice_index(request, view) if view is not None else None
    if view is None or index is None or view.key_slices[index].archive_uri is None:
        return PlainTextResponse("no such slice", status_code=404)
    key, reader = view.key_slices[index], request.app.state.archive
    try:
        data = await run_in_threadpool(
            slice_png, reader, archive_uri=key.archive_uri or "", frame=key.frame, window=view.window
        )
    except NoImage as exc:
        return PlainTextResponse(str(exc), status_code=404)
    return Response(data, media_type="image/png", headers=PNG_HEADERS)


@access("reader")
async def heatmap_image(request: Request) -> Response:
    view = await _study(request, audited=False)
    index = _slice_index(request, view) if view is not None else None
    if view is None or index is None:
        return PlainTextResponse("no such slice", status_code=404)
    uid = view.key_slices[index].sop_instance_uid
    try:
        if "pmap" in view.objects:
            data = await run_in_threadpool(pmap_overlay_png, view.objects["pmap"][0], sop_instance_uid=uid)
        else:
            data = await run_in_threadpool(sc_overlay_png, view.objects.get("sc", []), sop_instance_uid=uid)
    except NoImage as exc:
        return PlainTextResponse(str(exc), status_code=404)
    return Response(data, media_type="image/png", headers=PNG_HEADERS)


@access("reader")
async def give_verdict(request: Request) -> Response:
    form = await request.form()
    study_id = int(request.path_params["study_id"])
    try:
        verdict = parse_verdict(
            str(form.get("verdict", "")), str(form.get("label", "")), str(form.get("comment", ""))
        )
    except InvalidVerdict as exc:
        return PlainTextResponse(str(exc), status_code=400)
    username, address, now = request.state.account.username, client_address(request), _now()
    identifier = request.app.state.config.identifier

    def write(session: Any) -> bool:
        view = study_view(session, study_id=study_id, identifier=identifier)
        if view is None:
            return False
        record_verdict(
            session,
            study_id=study_id,
            model_version_id=view.model_version_id,
            ai_label=view.label,
            verdict=verdict,
            username=username,
            address=address,
            now=now,
        )
        return True

    if not await _db(request, write, commit=True):
        return PlainTextResponse("no complete result for this study", status_code=404)
    return RedirectResponse(f"/studies/{study_id}?saved=1", status_code=303)


# --- monitoring ----------------------------------------------------------------------------------


@access("reader")
async def monitoring_page(request: Request) -> Response:
    recorded, now = request.app.state.config.indeterminate_recorded, _now()
    figures = await _db(request, lambda s: monitoring(s, now=now, indeterminate_recorded=recorded))
    return _page(request, "monitoring.html", figures=figures, classes=CLASS_NAMES)


# --- accounts (admins) ---------------------------------------------------------------------------


@access("admin")
async def users_page(request: Request) -> Response:
    users = await _db(request, accounts.list_users)
    return _page(request, "users.html", users=users, error=request.query_params.get("error"))


@access("admin")
async def add_user(request: Request) -> Response:
    form = await request.form()
    username, role = str(form.get("username", "")), str(form.get("role", "reader"))
    password, admin, now = str(form.get("password", "")), request.state.account.username, _now()

    def add(session: Any) -> None:
        accounts.add_user(session, username=username, password=password, role=role, now=now)
        audit.record(session, action="user_added", now=now, username=admin, detail=f"{username} ({role})")

    try:
        await _db(request, add, commit=True)
    except ValueError as exc:  # AccountError, WeakPassword
        users = await _db(request, accounts.list_users)
        return _page(request, "users.html", 400, users=users, error=str(exc))
    return RedirectResponse("/admin/users", status_code=303)


@access("admin")
async def remove_user(request: Request) -> Response:
    username, admin, now = str(request.path_params["username"]), request.state.account.username, _now()
    if username == admin:
        return PlainTextResponse("you cannot remove your own account", status_code=400)

    def remove(session: Any) -> None:
        accounts.remove_user(session, username=username)
        audit.record(session, action="user_removed", now=now, username=admin, detail=username)

    try:
        await _db(request, remove, commit=True)
    except accounts.AccountError as exc:
        return PlainTextResponse(str(exc), status_code=404)
    return RedirectResponse("/admin/users", status_code=303)


@access("admin")
async def audit_page(request: Request) -> Response:
    entries = await _db(request, audit.recent)
    return _page(request, "audit.html", entries=entries)
