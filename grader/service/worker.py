"""The threads that grade what the queue holds: each claims one submission at a time, in its server's
name, and has its lane grade it: its own grading process on this machine (LocalLane: warm state of its
own, and the CPU work of grading away from the web server's interpreter), or the workers of a Dask
cluster (cluster.py). A grading process or worker that dies costs the submission it held one attempt,
as a dead worker does in `grader batch`. A keeper thread renews this server's claims and hands back
those of servers that died (servers.py)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Protocol

from sqlalchemy.orm import sessionmaker

from grader.errors import GraderError
from grader.grading.batch import Graded, GradingProcess
from grader.grading.options import GradeOptions
from grader.intake.collect import BatchItem
from grader.reports.html import FEEDBACK_FILES
from grader.service import queue
from grader.service.servers import ServerLock, dead_servers
from grader.service.storage import UploadStore
from grader.states import ResultStatus

log = logging.getLogger(__name__)
IDLE_POLL_S = 1.0  # how often an idle worker looks at the queue without being woken (another server's work)
KEEP_S = 5.0  # how often a server renews its claims and looks for dead servers
UNAVAILABLE_WAIT_S = 10.0  # how long a thread whose lane cannot be reached waits before it claims again
STOP_WAIT_S = 10.0  # how long a stopping service waits for the grades in flight before handing them back
WORKER_DIED = "the grader's worker process died while grading it"


class WorkerDied(Exception):
    """The process or Dask worker grading a submission died: not the student's verdict, one attempt spent."""


class LaneUnavailable(Exception):
    """Where this thread grades cannot be reached now (a restarting Dask scheduler): the submission goes
    back to the queue uncounted, and the thread waits a while before it claims another."""


class Lane(Protocol):
    """Where one grading thread's submissions are graded."""

    def start(self) -> None: ...

    def grade(self, item: BatchItem, assignment_id: str, options: GradeOptions) -> Graded: ...

    def close(self) -> None: ...


class LocalLane:
    """A grading process of this machine's (grader.grading.batch.GradingProcess)."""

    def __init__(self) -> None:
        self.process = GradingProcess("student")

    def start(self) -> None:
        self.process.start()

    def grade(self, item: BatchItem, assignment_id: str, options: GradeOptions) -> Graded:
        try:
            return self.process.grade(item, assignment_id, options)
        except BrokenProcessPool:
            raise WorkerDied from None

    def close(self) -> None:
        self.process.close()


class Graders:
    """One grading thread per lane and a keeper thread, started and stopped with the service; their
    claims are made in the name of `server`, whose lock lives in `server.folder` beside the others'."""

    def __init__(self, sessions: sessionmaker, store: UploadStore, options: GradeOptions, *, lanes: list[Lane],
                 scratch: Path, server: ServerLock):
        self.sessions = sessions
        self.store = store
        self.options = options
        self.scratch = scratch
        self.server = server
        self._lanes = lanes
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight: dict[int, queue.Claimed] = {}  # by submission id
        self._lock = threading.Lock()

    @property
    def jobs(self) -> int:
        return len(self._lanes)

    def start(self) -> None:
        self.scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        for index, lane in enumerate(self._lanes):
            lane.start()
            self._thread(self._loop, lane, name=f"grader-{index + 1}")
        self._thread(self._keep, name="grader-keeper")

    def _thread(self, target, *args, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def recover(self) -> tuple[int, int]:
        """Hand back what dead servers left GRADING: (requeued, failed)."""
        with dead_servers(self.server.folder, alive=self.server.id) as dead:
            return queue.recover(self.sessions, dead)

    def _keep(self) -> None:
        while not self._stop.wait(KEEP_S):
            try:
                queue.renew(self.sessions, self.server.id)
                requeued, failed = self.recover()
            except Exception:  # a database that is restarting: the next round tries again
                log.exception("renewing this server's claims failed")
                continue
            if requeued or failed:
                log.warning("a grading server died: %s of its submissions queued again, %s failed", requeued, failed)
                self._wake.set()

    def wake(self) -> None:
        """Something was queued: an idle worker looks now, not at its next poll."""
        self._wake.set()

    def stop(self) -> None:
        """End the threads: a grade that finishes within STOP_WAIT_S is kept, the others go back to the
        queue uncounted (the next start grades them); then end the grading processes and their kernels."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + STOP_WAIT_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            unfinished = list(self._in_flight.values())
        for claimed in unfinished:
            queue.release(self.sessions, claimed)
        for lane in self._lanes:
            lane.close()

    def _loop(self, lane: Lane) -> None:
        while not self._stop.is_set():
            claimed = queue.claim(self.sessions, self.server.id)
            if claimed is None:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            with self._lock:
                self._in_flight[claimed.id] = claimed
            try:
                self.grade(claimed, lane)
            except Exception as exc:  # one submission never stops the service
                if self._stop.is_set():
                    return  # its process ended with the service: stop() handed it back
                log.exception("grading submission %s failed", claimed.public_id)
                queue.give_back(self.sessions, claimed, f"the grader failed ({type(exc).__name__})")
            finally:
                with self._lock:
                    self._in_flight.pop(claimed.id, None)

    def grade(self, claimed: queue.Claimed, lane: Lane) -> None:
        folder = Path(tempfile.mkdtemp(prefix="submission-", dir=self.scratch))
        try:
            notebook = folder / Path(claimed.filename).name
            notebook.write_bytes(self.store.get(claimed.sha256))
            try:
                graded = lane.grade(BatchItem(claimed.public_id, notebook), claimed.assignment, self.options)
            except LaneUnavailable as exc:
                log.warning("%s: %s; queued again", claimed.public_id, exc)
                queue.release(self.sessions, claimed)
                self._stop.wait(UNAVAILABLE_WAIT_S)
                return
            except WorkerDied:
                if not self._stop.is_set():
                    log.warning("%s: %s", claimed.public_id, WORKER_DIED)
                    queue.give_back(self.sessions, claimed, WORKER_DIED)
                return
            except GraderError as exc:  # a broken installation: every submission would fail the same way
                queue.give_back(self.sessions, claimed, exc.message)
                return
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        result = graded.result
        if result.status == ResultStatus.GRADER_ERROR:  # not the student's fault: graded again
            queue.give_back(self.sessions, claimed, result.message)
            return
        page = graded.rendered[FEEDBACK_FILES["student"]]
        queue.finish(self.sessions, claimed, score=result.score if result.has_grade else None,
                     max_score=result.max_score, result_status=str(result.status), message=result.message,
                     result_json=result.to_json(), feedback_html=page.decode("utf-8"))
        log.info("graded %s (%s): %s/%s", claimed.public_id, claimed.assignment, result.score, result.max_score)
