"""Password hashing: argon2id (memory-hard), with argon2-cffi's parameters, salt and encoding."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 10

_HASHER = PasswordHasher()
# A hash to verify against when the account does not exist: a wrong name takes as long as a wrong password.
_DUMMY_HASH = _HASHER.hash("kidneyct-review-no-such-account")


class WeakPassword(ValueError):
    """A password too short to set."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches; `stored_hash` None (no such account) spends the same time and fails."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's."""
    return _HASHER.check_needs_rehash(stored_hash)
