"""Who is asking: tokens (stored only as hashes), the two roles, and CSRF tokens for the pages' forms.

A student or a staff member proves who they are with a token: in an `Authorization: Bearer` header (the
API, `grader submit --to`), or in a cookie set by the login page (the browser). A token never appears
in a URL the server sees: a personal link carries it after `#`, which browsers do not send.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from grader.service.db import Staff, Student

COOKIE = "grader_session"
STUDENT, STAFF = "student", "staff"


@dataclass(frozen=True)
class Caller:
    role: str  # STUDENT | STAFF
    id: int
    name: str
    token_hash: str


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def caller_of(session: Session, token: str | None) -> Caller | None:
    """The student or staff member whose token this is; None for no token or an unknown one."""
    if not token or len(token) > 200:
        return None
    digest = token_hash(token)
    staff = session.scalar(select(Staff).where(Staff.token_hash == digest))
    if staff is not None:
        return Caller(STAFF, staff.id, staff.name, digest)
    student = session.scalar(select(Student).where(Student.token_hash == digest))
    if student is not None:
        return Caller(STUDENT, student.id, student.name, digest)
    return None


def csrf_token(secret: bytes, caller: Caller) -> str:
    """The token a page's form carries for `caller`: a cross-site form cannot know it."""
    return hmac.new(secret, caller.token_hash.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, caller: Caller, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(secret, caller), given or "")
