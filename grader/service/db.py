"""The service's tables, and the one way to bring a database to the current schema (Alembic migrations).

The same code runs on SQLite (the default: a file in the state directory) and PostgreSQL (a course
that outgrows one machine): no SQL strings, no dialect-specific types.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import ForeignKey, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)  # stored naive, always UTC


class Base(DeclarativeBase):
    pass


class Student(Base):
    __tablename__ = "students"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # the roster's id (a Canvas or Moodle id, an email)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the student's token
    created_at: Mapped[dt.datetime] = mapped_column(default=now)
    lms: Mapped[str] = mapped_column(String(20), default="", server_default="")  # "canvas" | "moodle" | ""


class AssignmentSettings(Base):
    """What staff decided for one assignment: its deadline, and which submission's grade counts."""

    __tablename__ = "assignment_settings"

    assignment: Mapped[str] = mapped_column(String(100), primary_key=True)
    deadline: Mapped[dt.datetime | None]  # UTC
    policy: Mapped[str] = mapped_column(String(30), default="last")  # grades.POLICIES


class Staff(Base):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=now)


class Submission(Base):
    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(primary_key=True)  # the queue's order
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # in URLs: random, never the row number
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id"), index=True)
    assignment: Mapped[str] = mapped_column(String(100))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))  # the stored upload (storage.py)
    size: Mapped[int]
    status: Mapped[str] = mapped_column(String(20), index=True)  # queue.QUEUED, GRADING, GRADED, FAILED
    attempts: Mapped[int] = mapped_column(default=0)  # grading starts: a crash mid-grade costs one
    claimed_by: Mapped[str | None] = mapped_column(String(32))  # the server grading it (servers.py)
    lease_expires: Mapped[dt.datetime | None]  # its claim lapses then unless that server renews it
    received_at: Mapped[dt.datetime] = mapped_column(default=now, index=True)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    score: Mapped[float | None]
    max_score: Mapped[float | None]
    result_status: Mapped[str | None] = mapped_column(String(20))  # result.json's status
    message: Mapped[str] = mapped_column(Text, default="")
    result_json: Mapped[str | None] = mapped_column(Text)  # the staff's record
    feedback_html: Mapped[str | None] = mapped_column(Text)  # the student's page


def engine_for(url: str) -> Engine:
    """An engine for `url`; SQLite waits for a lock instead of failing at once, and keeps foreign keys."""
    if url.startswith("sqlite"):
        # a connection per request in flight (a class uploading at once): SQLite's are cheap
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=20,
                               max_overflow=80)

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the grader's writes
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30)


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema (a new database gets every migration)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
