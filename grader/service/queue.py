"""The grading queue, in the database: what was accepted is graded once, whatever dies on the way.

A submission is QUEUED when its upload is on disk and its row committed. A worker claims the oldest
with one conditional UPDATE (only one claimer's succeeds), in its server's name and under a lease the
server renews while it lives; it grades it, and stores its result and feedback in the same transaction
that marks it GRADED, provided the claim is still its own. A server killed mid-grade leaves rows in
GRADING: whichever server learns of its death first (servers.py: its lock was free, or its leases ran
out), the same one restarted included, puts them back in the queue, once. A submission whose grading
was started MAX_ATTEMPTS times (it stopped the grader each time) is not started again: it is FAILED,
with a reason, as `grader batch` does with a notebook that killed two workers.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from grader.service.db import Submission, now

QUEUED, GRADING, GRADED, FAILED = "queued", "grading", "graded", "failed"
MAX_ATTEMPTS = 2
# A claim holds this long past its server's last renewal (every few seconds): a server on a machine too
# busy to renew within it for minutes would lose its claims; well beyond any pause of a loaded machine.
LEASE_S = 300
STOPPED_TWICE = "this notebook stopped the grader twice while it was being graded; it was not tried again"


@dataclass(frozen=True)
class Claimed:
    """A submission a worker took from the queue."""

    id: int
    public_id: str
    assignment: str
    filename: str
    sha256: str
    attempts: int
    server: str  # the server whose claim it is


def enqueue(session: Session, *, student_id: int, assignment: str, filename: str, sha256: str,
            size: int) -> Submission:
    """A new QUEUED submission, committed: the caller answers the upload only after this returns."""
    row = Submission(public_id=secrets.token_hex(16), student_id=student_id, assignment=assignment,
                     filename=filename, sha256=sha256, size=size, status=QUEUED, attempts=0, message="")
    session.add(row)
    session.commit()
    return row


def _lease_end() -> dt.datetime:
    return now() + dt.timedelta(seconds=LEASE_S)


def claim(sessions: sessionmaker, server: str) -> Claimed | None:
    """The oldest queued submission, now GRADING and claimed by `server`; None when the queue is empty."""
    with sessions() as session:
        while True:
            candidate = session.scalar(select(Submission.id).where(Submission.status == QUEUED)
                                       .order_by(Submission.id).limit(1))
            if candidate is None:
                return None
            taken = session.execute(update(Submission)
                                    .where(Submission.id == candidate, Submission.status == QUEUED)
                                    .values(status=GRADING, attempts=Submission.attempts + 1, started_at=now(),
                                            claimed_by=server, lease_expires=_lease_end()))
            session.commit()
            if taken.rowcount == 1:  # another worker may have taken it first
                row = session.get_one(Submission, candidate)
                return Claimed(row.id, row.public_id, row.assignment, row.filename, row.sha256, row.attempts,
                               server)


def _still_ours(claimed: Claimed):
    """The condition under which a claim is the caller's to finish: it was not handed back meanwhile."""
    return (Submission.id == claimed.id) & (Submission.status == GRADING) & (Submission.claimed_by == claimed.server)


def finish(sessions: sessionmaker, claimed: Claimed, *, score: float | None, max_score: float | None,
           result_status: str, message: str, result_json: str, feedback_html: str) -> None:
    """Store a graded submission's result and feedback, and mark it GRADED, in one transaction."""
    with sessions() as session:
        session.execute(update(Submission).where(_still_ours(claimed))
                        .values(status=GRADED, finished_at=now(), lease_expires=None, score=score, max_score=max_score,
                                result_status=result_status, message=message, result_json=result_json,
                                feedback_html=feedback_html))
        session.commit()


def give_back(sessions: sessionmaker, claimed: Claimed, why: str) -> None:
    """The grader could not finish (not the student's fault): queued again, or FAILED after MAX_ATTEMPTS."""
    with sessions() as session:
        row = session.get_one(Submission, claimed.id)
        if row.status != GRADING or row.claimed_by != claimed.server:  # handed back meanwhile: not ours now
            return
        if row.attempts >= MAX_ATTEMPTS:
            row.status, row.finished_at, row.message = FAILED, now(), f"not graded: {why}"
        else:
            row.status, row.message = QUEUED, why
        row.lease_expires = None
        session.commit()


def release(sessions: sessionmaker, claimed: Claimed) -> None:
    """A submission this server stops grading on purpose (it is shutting down): queued again, and this
    start not counted against it."""
    with sessions() as session:
        session.execute(update(Submission).where(_still_ours(claimed))
                        .values(status=QUEUED, attempts=Submission.attempts - 1, started_at=None,
                                lease_expires=None))
        session.commit()


def renew(sessions: sessionmaker, server: str) -> None:
    """`server` is alive: its claims hold for another LEASE_S."""
    with sessions() as session:
        session.execute(update(Submission).where(Submission.status == GRADING, Submission.claimed_by == server)
                        .values(lease_expires=_lease_end()))
        session.commit()


def recover(sessions: sessionmaker, dead: Collection[str]) -> tuple[int, int]:
    """What dead servers left GRADING (claimed by one of `dead`, by a server from before claims were
    named, or under a lapsed lease) goes back to the queue, or to FAILED once it was started
    MAX_ATTEMPTS times. (requeued, failed)."""
    orphaned = (Submission.status == GRADING) & or_(Submission.claimed_by.is_(None), Submission.claimed_by.in_(dead),
                                                    Submission.lease_expires < now())
    with sessions() as session:
        stopped = session.execute(update(Submission).where(orphaned, Submission.attempts >= MAX_ATTEMPTS)
                                  .values(status=FAILED, finished_at=now(), message=STOPPED_TWICE,
                                          lease_expires=None))
        requeued = session.execute(update(Submission).where(orphaned)
                                   .values(status=QUEUED, started_at=None, lease_expires=None))
        session.commit()
        return requeued.rowcount, stopped.rowcount


def position(session: Session, row: Submission) -> int:
    """How many queued submissions are ahead of `row` (0: next)."""
    if row.status != QUEUED:
        return 0
    return session.scalar(select(func.count()).select_from(Submission)
                          .where(Submission.status == QUEUED, Submission.id < row.id)) or 0


def regrade(session: Session, rows: list[Submission]) -> int:
    """Put these submissions back in the queue (after a fix to the assignment's spec): their old result
    stays shown until the new one replaces it. One being graded now is left to finish. How many."""
    count = 0
    for row in rows:
        if row.status != GRADING:
            row.status, row.attempts, row.message = QUEUED, 0, ""
            count += 1
    session.commit()
    return count
