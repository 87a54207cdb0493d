"""The threads that grade what the queue holds: each claims one submission at a time and has its own
grading process grade it (grader.grading.batch.GradingProcess: warm state of its own, and the CPU
work of grading away from the web server's interpreter). A grading process that dies costs the
submission it held one attempt, as a dead worker does in `grader batch`."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from sqlalchemy.orm import sessionmaker

from grader.errors import GraderError
from grader.grading.batch import GradingProcess
from grader.grading.options import GradeOptions
from grader.intake.collect import BatchItem
from grader.reports.html import FEEDBACK_FILES
from grader.service import queue
from grader.service.storage import UploadStore
from grader.states import ResultStatus

log = logging.getLogger(__name__)
IDLE_POLL_S = 1.0  # how often an idle worker looks at the queue without being woken (another server's work)
STOP_WAIT_S = 10.0  # how long a stopping service waits for the grades in flight before handing them back
WORKER_DIED = "the grader's worker process died while grading it"


class Graders:
    """`jobs` grading threads, each with its grading process, started and stopped with the service."""

    def __init__(self, sessions: sessionmaker, store: UploadStore, options: GradeOptions, *, jobs: int,
                 scratch: Path):
        self.sessions = sessions
        self.store = store
        self.options = options
        self.jobs = jobs
        self.scratch = scratch
        self._processes = [GradingProcess("student") for _ in range(jobs)]
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight: dict[int, queue.Claimed] = {}  # by submission id
        self._lock = threading.Lock()

    def start(self) -> None:
        self.scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        for index, process in enumerate(self._processes):
            process.start()
            thread = threading.Thread(target=self._loop, args=(process,), name=f"grader-{index + 1}", daemon=True)
            thread.start()
            self._threads.append(thread)

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
        for process in self._processes:
            process.close()

    def _loop(self, process: GradingProcess) -> None:
        while not self._stop.is_set():
            claimed = queue.claim(self.sessions)
            if claimed is None:
                self._wake.wait(IDLE_POLL_S)
                self._wake.clear()
                continue
            with self._lock:
                self._in_flight[claimed.id] = claimed
            try:
                self.grade(claimed, process)
            except Exception as exc:  # one submission never stops the service
                if self._stop.is_set():
                    return  # its process ended with the service: stop() handed it back
                log.exception("grading submission %s failed", claimed.public_id)
                queue.give_back(self.sessions, claimed, f"the grader failed ({type(exc).__name__})")
            finally:
                with self._lock:
                    self._in_flight.pop(claimed.id, None)

    def grade(self, claimed: queue.Claimed, process: GradingProcess) -> None:
        folder = Path(tempfile.mkdtemp(prefix="submission-", dir=self.scratch))
        try:
            notebook = folder / Path(claimed.filename).name
            notebook.write_bytes(self.store.get(claimed.sha256))
            try:
                graded = process.grade(BatchItem(claimed.public_id, notebook), claimed.assignment, self.options)
            except BrokenProcessPool:
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
