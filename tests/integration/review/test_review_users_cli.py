"""`kidneyct users add|passwd|list|remove` on both databases, through the real command line group."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import select

from kidneyct.cli import cli
from review.accounts import authenticate
from storage.db.engine import make_engine, make_session_factory
from storage.db.tables import ReviewAudit, ReviewUser


def _run(url: str, *args: str, stdin: str = "") -> tuple[int, str]:
    result = CliRunner().invoke(
        cli, list(args), input=stdin, env={"KIDNEYCT_DATABASE_URL": url, "KIDNEYCT_LOG_FORMAT": "json"}
    )
    return result.exit_code, result.output


def test_users_add_list_passwd_remove(migrated_database_url: str) -> None:
    """An admin is added with an argon2id hash, listed, given a new password, removed; each is audited."""
    url = migrated_database_url
    assert (
        _run(
            url, "users", "add", "dr.ada", "--role", "admin", "--password-stdin", stdin="first password 1\n"
        )[0]
        == 0
    )
    code, out = _run(url, "users", "list")
    assert code == 0 and "dr.ada\tadmin" in out
    sessions = make_session_factory(make_engine(url))
    with sessions() as session:
        stored = session.scalar(select(ReviewUser.password_hash))
        assert stored is not None and stored.startswith("$argon2id$") and "first password" not in stored
    assert _run(url, "users", "passwd", "dr.ada", "--password-stdin", stdin="second password 2\n")[0] == 0
    with sessions.begin() as session:
        assert authenticate(session, username="dr.ada", password="first password 1") is None
        assert authenticate(session, username="dr.ada", password="second password 2") is not None
    assert _run(url, "users", "remove", "dr.ada")[0] == 0
    code, out = _run(url, "users", "list")
    assert code == 0 and "dr.ada" not in out
    with sessions() as session:
        actions = session.scalars(select(ReviewAudit.action).order_by(ReviewAudit.id)).all()
        assert actions == ["user_added", "password_changed", "user_removed"]


def test_users_refuses_bad_input_with_one_line(migrated_database_url: str) -> None:
    """A short password, a duplicate, an unknown user: a clear error and exit code 1."""
    url = migrated_database_url
    code, out = _run(url, "users", "add", "bob", "--password-stdin", stdin="short\n")
    assert code == 1 and "at least 10 characters" in out
    assert _run(url, "users", "add", "bob", "--password-stdin", stdin="long enough pw\n")[0] == 0
    code, out = _run(url, "users", "add", "bob", "--password-stdin", stdin="long enough pw\n")
    assert code == 1 and "exists already" in out
    code, out = _run(url, "users", "remove", "nobody")
    assert code == 1 and "no user 'nobody'" in out
    code, out = _run(url, "users", "add", "bad name", "--password-stdin", stdin="long enough pw\n")
    assert code == 1 and "user name" in out
