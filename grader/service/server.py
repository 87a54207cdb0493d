"""One `grader serve`: the database brought up to date, what dead servers left handed back, the graders
(on this machine, or on a Dask cluster) and the web server started, and all of it stopped together."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from grader.compat import serialize_ast_parsing
from grader.errors import HarnessError
from grader.grading.options import GradeOptions
from grader.service import auth
from grader.service.app import ServiceSettings, create_app
from grader.service.db import Staff, engine_for, migrate, session_factory
from grader.service.servers import ServerLock
from grader.service.storage import UploadStore
from grader.service.worker import Graders, Lane, LocalLane

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceConfig:
    state_dir: Path
    options: GradeOptions
    database: str | None = None  # default: SQLite in the state directory
    host: str = "127.0.0.1"
    port: int = 8000
    jobs: int | None = None  # submissions graded at once; default 1, or the cluster's threads
    max_upload_mb: int = 5
    submissions_per_minute: int = 6
    scheduler: str | None = None  # a Dask scheduler's address: grade on its workers
    cluster_device: str = "auto"  # --device, for the cluster's workers to resolve (distributed.place)
    cluster_data_root: Path | None = None  # --data-root, where the workers share this machine's

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.state_dir / 'grader.sqlite3'}"


def serve(config: ServiceConfig, *, say=lambda text: print(text, flush=True)) -> None:
    """Run the service until interrupted (Ctrl-C or SIGTERM); what was accepted stays queued for the next start."""
    import uvicorn

    serialize_ast_parsing()  # requests and grading threads share this process
    config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    engine = engine_for(config.database_url)
    try:
        migrate(engine)
    except OperationalError as exc:
        raise HarnessError(f"cannot use the database {engine.url.render_as_string()}: "
                           f"{str(exc.orig).strip().splitlines()[0]}") from None
    sessions = session_factory(engine)
    if config.scheduler:
        from grader.service.cluster import Cluster

        cluster = Cluster(config.scheduler, device=config.cluster_device, data_root=config.cluster_data_root)
        threads = cluster.connect()
        lanes: list[Lane] = [cluster] * (config.jobs or threads)
        where = f"on the Dask cluster at {config.scheduler}"
    else:
        lanes = [LocalLane() for _ in range(config.jobs or 1)]
        where = "here"
    server = ServerLock(config.state_dir / "servers")
    graders = Graders(sessions, UploadStore(config.state_dir / "uploads"), config.options, lanes=lanes,
                      scratch=config.state_dir / "work", server=server)
    requeued, failed = graders.recover()
    if requeued or failed:
        say(f"recovered the queue: {requeued} submission(s) graded again, {failed} stopped the grader twice")
    first_login = _first_staff(sessions)
    settings = ServiceSettings(course_root=config.options.course_root, max_upload_mb=config.max_upload_mb,
                               submissions_per_minute=config.submissions_per_minute,
                               secret=_secret(config.state_dir))
    app = create_app(sessions, graders.store, settings, on_queued=graders.wake)
    url = f"http://{config.host}:{config.port}/"
    say(f"grader serve: {url} (course {config.options.course_root}, database {engine.url.render_as_string()}, "
        f"{graders.jobs} grading thread(s) {where})")
    if first_login:
        say(f"first staff login (shown once): {url}login#{first_login}")
    graders.start()
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", access_log=False)
    finally:
        graders.stop()  # closes the lanes: the grading processes, or the cluster's client
        server.close()
        engine.dispose()


def _first_staff(sessions) -> str | None:
    """A new database's staff account; its token, or None when there is staff already."""
    with sessions() as session:
        if session.scalar(select(Staff.id).limit(1)) is not None:
            return None
        token = auth.new_token()
        session.add(Staff(name="staff", token_hash=auth.token_hash(token)))
        session.commit()
        return token


def _secret(state_dir: Path) -> bytes:
    """The key of the forms' CSRF tokens, made once and kept in the state directory (owner-only)."""
    path = state_dir / "secret"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(descriptor, "wb") as file:
        file.write(secrets.token_bytes(32))
    return path.read_bytes()
