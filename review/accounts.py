"""Accounts of the review station: add, remove, change a password, list, check a sign-in.

Keyword-only functions that take a `Session` and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from review.passwords import hash_password, needs_rehash, verify_password
from storage.db.tables import REVIEW_ROLES, ReviewUser

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class AccountError(ValueError):
    """An account that cannot be made or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    role: str
    created_at: dt.datetime
    password_changed_at: dt.datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _account(row: ReviewUser) -> Account:
    return Account(row.username, row.role, row.created_at, row.password_changed_at)


def check_username(username: str) -> str:
    if not _USERNAME.match(username):
        raise AccountError(
            "a user name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return username


def check_role(role: str) -> str:
    if role not in REVIEW_ROLES:
        raise AccountError(f"unknown role {role!r}; expected one of {', '.join(REVIEW_ROLES)}")
    return role


def add_user(session: Session, *, username: str, password: str, role: str, now: dt.datetime) -> Account:
    check_username(username)
    check_role(role)
    if session.scalar(select(ReviewUser.id).where(ReviewUser.username == username)) is not None:
        raise AccountError(f"user {username!r} exists already")
    row = ReviewUser(
        username=username,
        password_hash=hash_password(password),
        role=role,
        created_at=now,
        password_changed_at=now,
    )
    session.add(row)
    session.flush()
    return _account(row)


def remove_user(session: Session, *, username: str) -> None:
    if session.execute(delete(ReviewUser).where(ReviewUser.username == username)).rowcount == 0:  # type: ignore[attr-defined]
        raise AccountError(f"no user {username!r}")


def set_password(session: Session, *, username: str, password: str, now: dt.datetime) -> None:
    row = session.scalar(select(ReviewUser).where(ReviewUser.username == username))
    if row is None:
        raise AccountError(f"no user {username!r}")
    row.password_hash = hash_password(password)
    row.password_changed_at = now
    session.flush()


def list_users(session: Session) -> list[Account]:
    return [_account(r) for r in session.scalars(select(ReviewUser).order_by(ReviewUser.username))]


def find_user(session: Session, *, username: str) -> Account | None:
    row = session.scalar(select(ReviewUser).where(ReviewUser.username == username))
    return _account(row) if row is not None else None


def authenticate(session: Session, *, username: str, password: str) -> Account | None:
    """The account if the password is right; its hash is upgraded when today's parameters are stronger."""
    row = session.scalar(select(ReviewUser).where(ReviewUser.username == username))
    if not verify_password(row.password_hash if row is not None else None, password) or row is None:
        return None
    if needs_rehash(row.password_hash):
        row.password_hash = hash_password(password)
    return _account(row)
