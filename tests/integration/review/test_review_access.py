"""Who gets in: every route of the app, enumerated from the app itself, under each kind of visitor."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

from review.app import ROUTES, access_table, create_app
from review.guards import access_of
from tests.integration.review.conftest import PASSWORD, ReviewSite, csrf_of, sign_in


def _concrete(path: str, study_id: int) -> str:
    path = path.replace("{study_id:int}", str(study_id)).replace("{index:int}", "0")
    return re.sub(r"\{[^}]+\}", "reader", path)


def _routes(site: ReviewSite) -> list[tuple[str, str, str]]:
    app = create_app(site.sessions, site.config, None)  # type: ignore[arg-type]
    found = []
    for route in app.routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append(
                        (method, _concrete(route.path, site.study_ids[0]), access_of(route.endpoint) or "?")
                    )
    return found


def test_every_route_declares_its_access(site: ReviewSite) -> None:
    """No route of the app is left without a declared access level."""
    routes = _routes(site)
    assert len(routes) == len(ROUTES)
    assert {level for _, _, level in routes} <= {"public", "reader", "admin"}


def test_without_a_session_every_protected_route_is_refused_or_sent_to_sign_in(site: ReviewSite) -> None:
    """GET redirects to /signin; POST is refused with 401; nothing protected answers 200."""
    client = site.client()
    for method, path, level in _routes(site):
        if level == "public":
            continue
        response = client.request(method, path, data={}, follow_redirects=False)
        if method == "GET":
            assert (response.status_code, response.headers.get("location")) == (303, "/signin"), (
                method,
                path,
            )
        else:
            assert response.status_code == 401, (method, path)


def test_a_reader_cannot_reach_admin_routes(site: ReviewSite) -> None:
    """Every admin route answers 403 to a signed-in reader, with or without the CSRF token."""
    client = site.client()
    assert sign_in(client) == 303
    token = csrf_of(client)
    admin_routes = [(m, p) for m, p, level in _routes(site) if level == "admin"]
    assert admin_routes
    for method, path in admin_routes:
        response = client.request(method, path, data={"csrf_token": token}, follow_redirects=False)
        assert response.status_code == 403, (method, path)


def test_an_admin_reaches_admin_routes(site: ReviewSite) -> None:
    """The admin's account page lists the accounts."""
    client = site.client()
    assert sign_in(client, "admin") == 303
    page = client.get("/admin/users")
    assert page.status_code == 200 and "reader" in page.text


def test_every_post_without_the_csrf_token_is_refused(site: ReviewSite) -> None:
    """A signed-in admin's POSTs without a token, or with a wrong one, are 403 and change nothing."""
    client = site.client()
    assert sign_in(client, "admin") == 303
    posts = [p for m, p, _ in _routes(site) if m == "POST"]
    assert "/signin" in posts and len(posts) >= 4
    for path in posts:
        for data in ({}, {"csrf_token": "forged"}):
            response = client.post(path, data={**data, "verdict": "confirm"}, follow_redirects=False)
            assert response.status_code == 403, (path, data)
    assert client.get("/admin/users").status_code == 200  # still signed in: sign-out was refused too


def test_sign_in_is_throttled_per_account_after_n_failures(site: ReviewSite) -> None:
    """After 3 failures (the configured N) even the right password is refused with 429."""
    client = site.client()
    for _ in range(3):
        assert sign_in(client, "reader", "wrong password!") == 401
    assert sign_in(client, "reader", PASSWORD) == 429
    assert sign_in(client, "admin", PASSWORD) == 303  # another account is not locked by these


def test_sign_in_is_throttled_per_address(site: ReviewSite) -> None:
    """Failures spread over many names from one address lock that address (N=10)."""
    client = site.client()
    for i in range(10):
        assert sign_in(client, f"nobody{i}", "wrong password!") == 401
    assert sign_in(client, "admin", PASSWORD) == 429


def test_session_cookie_is_signed_httponly_and_samesite(site: ReviewSite) -> None:
    """The cookie is HttpOnly, SameSite=Lax, and a tampered cookie is no session."""
    client = site.client()
    page = client.get("/signin")
    cookie = page.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    assert sign_in(client) == 303
    value = client.cookies.get("kidneyct_review")
    assert value
    client.cookies.set("kidneyct_review", value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert client.get("/", follow_redirects=False).status_code == 303


def test_secure_cookies_when_configured(site: ReviewSite) -> None:
    """Under TLS (or when configured behind a TLS proxy) the cookie is marked Secure."""
    from dataclasses import replace

    site.config = replace(site.config, secure_cookies=True)
    assert "secure" in site.client().get("/signin").headers["set-cookie"].lower()


def test_a_removed_account_loses_its_session_at_once(site: ReviewSite) -> None:
    """Accounts are looked up on every request: removing one ends its sessions."""
    from review.accounts import remove_user

    client = site.client()
    assert sign_in(client) == 303
    with site.sessions.begin() as session:
        remove_user(session, username="reader")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_the_access_table_lists_every_route() -> None:
    """docs/review.md's table is the app's: same routes, same access levels."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "review.md").read_text()
    for method, path, level in access_table():
        assert f"| {method} | `{path}` | {level} |" in doc, (method, path)


@pytest.mark.parametrize("level", ["public", "reader", "admin"])
def test_levels_are_used(level: str) -> None:
    """Each access level guards at least one route (the table is not all one kind)."""
    assert any(access_of(r.endpoint) == level for r in ROUTES)


def test_pages_forbid_scripts_framing_and_caching(site: ReviewSite) -> None:
    """CSP without script, no framing, nosniff, no-store on the sign-in page and on images."""
    client = site.client()
    headers = client.get("/signin").headers
    assert "script-src 'none'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    assert sign_in(client) == 303
    image = client.get(f"/studies/{site.study_ids[0]}/slices/0.png")
    assert image.headers["cache-control"] == "private, no-store"


def test_comments_are_escaped(site: ReviewSite) -> None:
    """A comment with markup is shown as text, not run."""
    client = site.client()
    assert sign_in(client) == 303
    token = csrf_of(client)
    client.post(
        f"/studies/{site.study_ids[0]}/verdict",
        data={"verdict": "confirm", "comment": "<script>alert(1)</script>", "csrf_token": token},
    )
    page = client.get(f"/studies/{site.study_ids[0]}").text
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
