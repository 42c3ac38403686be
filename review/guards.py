"""Who may call an endpoint, and the CSRF check of every state-changing request.

A session (a signed, HttpOnly, SameSite=Lax cookie made by Starlette's SessionMiddleware) holds the
user name and a CSRF token; the account is looked up on every request, so a removed account or a
changed role takes effect at once. Each endpoint declares its access (`public`, `reader`, `admin`):
the route-by-route test and the access table in docs/review.md read that declaration.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from review.accounts import Account, find_user

Endpoint = Callable[[Request], Awaitable[Response]]
ACCESS_ATTRIBUTE = "review_access"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return str(token)


async def csrf_ok(request: Request) -> bool:
    form = await request.form()
    sent = form.get("csrf_token")
    expected = request.session.get("csrf")
    return isinstance(sent, str) and bool(expected) and hmac.compare_digest(sent, str(expected))


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def signed_in(request: Request) -> Account | None:
    username = request.session.get("user")
    if not username:
        return None
    sessions = request.app.state.sessions

    def lookup() -> Account | None:
        with sessions() as session:
            return find_user(session, username=str(username))

    return await run_in_threadpool(lookup)


def _refusal(request: Request) -> Response:
    if request.method in SAFE_METHODS:
        return RedirectResponse("/signin", status_code=303)
    return PlainTextResponse("sign in first", status_code=401)


def access(level: str) -> Callable[[Endpoint], Endpoint]:
    """Guard an endpoint: `public`, `reader` (any signed-in account) or `admin`; POST needs the CSRF token."""
    if level not in ("public", "reader", "admin"):
        raise ValueError(level)

    def decorate(endpoint: Endpoint) -> Endpoint:
        @wraps(endpoint)
        async def guarded(request: Request) -> Response:
            if level != "public":
                account = await signed_in(request)
                if account is None:
                    return _refusal(request)
                if level == "admin" and not account.is_admin:
                    return PlainTextResponse("admins only", status_code=403)
                request.state.account = account
            if request.method not in SAFE_METHODS and not await csrf_ok(request):
                return PlainTextResponse("missing or wrong CSRF token", status_code=403)
            return await endpoint(request)

        setattr(guarded, ACCESS_ATTRIBUTE, level)
        return guarded

    return decorate


def access_of(endpoint: Any) -> str | None:
    return getattr(endpoint, ACCESS_ATTRIBUTE, None)
