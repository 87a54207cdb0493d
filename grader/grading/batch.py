"""Grade a class: many submissions, in parallel, resumably, one failure never stopping the rest.

Each student's result.json and feedback.html go to OUT/<student>/ (the staff's
record: result.json carries hidden checks' details), and the feedback page alone
to OUT/_students/<student>/, a tree whose folders can be handed back as they
are (no student id starts with "_", see grader.intake.collect.safe_name). A result
is written atomically the moment it exists, so a killed batch loses nothing:
run the same command again and it grades only what is missing or changed
(compared by the notebook's SHA-256), trusting only results the grader signed
(grader.grading.ledger). Workers grade and render; the batch itself writes, so a
student whose files cannot be written is reported and the rest go on.
summary.html is rebuilt at the end.

Where the grading runs is a `Runner`: `LocalRunner` (in this process, or a
pool of N processes on this machine) or `grader.grading.distributed.DaskRunner` (the
workers of a Dask cluster). Each hands every `Graded` to the same writer.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from grader.child import launch
from grader.course.assignment import Assignment
from grader.errors import GraderError
from grader.grading.ledger import Ledger
from grader.grading.options import GradeOptions
from grader.grading.pipeline import grade_safely, zero_result
from grader.grading.warm import Warm, image_request
from grader.intake.collect import BatchItem, Intake
from grader.intake.notebooks import sha256_of
from grader.kernel.session import started_any_kernel, warm_up_kernel_start
from grader.reports.html import FEEDBACK_FILES, SummaryEntry, write_class_summary
from grader.reports.outputs import Rendered, render_outputs, write_rendered
from grader.reports.plain import printable
from grader.results import GradeResult
from grader.sandbox.image import ImageUnavailable, KernelImage
from grader.states import CheckStatus, ResultStatus

log = logging.getLogger(__name__)
STUDENT_TREE = "_students"  # OUT/_students/<student>/feedback.html: what may be handed back


@dataclass(frozen=True)
class StudentOutcome:
    """What a batch ended with for one student (a check's outcome is grader.scoring.Outcome)."""

    student: str
    result: GradeResult
    reused: bool  # an earlier run's result for the same notebook


@dataclass(frozen=True)
class Graded:
    """One student's result and its rendered files, made where the grading ran (a worker);
    written and signed by the batch's one writer."""

    student: str
    result: GradeResult
    rendered: Rendered


def previous_result(out_dir: Path, item: BatchItem, assignment_id: str, ledger: Ledger) -> GradeResult | None:
    """The result of an earlier run for exactly this notebook, if the grader wrote it."""
    result = ledger.trusted_result(out_dir / item.student)
    try:
        digest = sha256_of(item.notebook)
    except OSError:
        return None
    if result is not None and result.assignment == assignment_id and result.submission_sha256 == digest \
            and result.status != ResultStatus.GRADER_ERROR:
        return result
    return None


def grade_item(item: BatchItem, assignment: Assignment, options: GradeOptions, audience: str, warm: Warm, *,
               worker: str = "") -> Graded:
    """Grade one student and render their files; anything unexpected becomes an error result.

    `worker` names the cluster worker that graded it, recorded in result.json's environment."""
    result = replace(grade_safely(item.notebook, assignment, options, warm), student=item.identity.to_dict())
    if worker:
        result = replace(result, environment={**result.environment, "worker": worker})
    return Graded(item.student, result, render_outputs(result, audience=audience))


def crashed(item: BatchItem, assignment: Assignment, options: GradeOptions, message: str,
            audience: str, *, sha256: str = "") -> Graded:
    """A result that says why, for a submission whose grading could not even report back (a dead worker).

    Without `sha256` it is the grader's failure (no grade; the next run of the batch grades it again);
    with the notebook's, a zero that stands (the submission itself killed the workers that tried it)."""
    result = zero_result(item.notebook, assignment, options, message=message, check_message=message,
                         check_status=CheckStatus.ERROR, sha256=sha256)
    result = replace(result, student=item.identity.to_dict(),
                     status=ResultStatus.ERROR if sha256 else ResultStatus.GRADER_ERROR)
    return Graded(item.student, result, render_outputs(result, audience=audience))


# A pool worker's one owner of what it keeps between submissions (its assignment, datasets, kernel image,
# a waiting trainer), made by the pool's initializer and closed when the worker exits: a
# ProcessPoolExecutor gives its tasks no other way to reach what their worker keeps.
_pool_worker_warm: Warm | None = None


def _own_worker_warm(warm: Warm) -> None:
    global _pool_worker_warm
    _pool_worker_warm = warm
    multiprocessing.util.Finalize(warm, warm.close, exitpriority=10)  # run as the worker ends its loop


def _worker_grade(item: BatchItem, assignment_id: str, options: GradeOptions, audience: str) -> Graded:
    warm = _pool_worker_warm
    assert warm is not None, "a pool worker's initializer made its warm state"
    try:
        return grade_item(item, warm.assignment(options.course_root, assignment_id), options, audience, warm)
    except KeyboardInterrupt:  # a terminal's Ctrl-C reaches the workers too: the batch says "interrupted"
        quiet_interrupted_tasks()
        raise


def quiet_interrupted_tasks() -> None:
    """After an interrupt, the kernel client's pending asyncio tasks end with errors nobody will read
    ("Task exception was never retrieved: Kernel died"); they are not the user's to see."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


@dataclass
class BatchReport:
    outcomes: list[StudentOutcome]
    write_failures: list[str]  # "student: why" for each student whose files could not be written


@dataclass(frozen=True)
class BatchJob:
    """What every pending submission of a batch is graded with."""

    assignment: Assignment
    options: GradeOptions
    audience: str  # "student" | "staff"


Record = Callable[[Graded], None]


class Runner(Protocol):
    """Where a batch's grading runs. `run` grades every pending item and hands each `Graded` to
    `record` as it arrives (in any order); a submission it could not grade still gets a `Graded`
    (a zero that says why). It raises only for a failure that would fail every submission."""

    def describe(self) -> str: ...

    def run(self, pending: Sequence[BatchItem], job: BatchJob, record: Record) -> None: ...

    def workers_in_use(self) -> int: ...


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands after one more outcome: for the progress display."""

    done: int  # outcomes so far, reused ones included
    total: int
    graded: int  # graded by this run
    elapsed_s: float  # since this run started grading
    workers: int  # workers grading now

    @property
    def rate_per_min(self) -> float:
        return self.graded * 60 / self.elapsed_s if self.graded and self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None before the first submission is graded."""
        return (self.total - self.done) * 60 / self.rate_per_min if self.rate_per_min else None


class LocalRunner:
    """Grade on this machine: in this process (jobs=1) or a pool of `jobs` processes, each with what it
    keeps warm between submissions; with jobs=1, `warm`'s (the command's)."""

    def __init__(self, jobs: int = 1, warm: Warm | None = None):
        self.jobs = max(1, jobs)
        self.warm = warm
        self._remaining = 0

    def describe(self) -> str:
        return f"with {self.jobs} job(s)"

    def workers_in_use(self) -> int:
        return min(self.jobs, self._remaining)

    def run(self, pending: Sequence[BatchItem], job: BatchJob, record: Record) -> None:
        # Each child kernel gets its share of the cores, so parallel jobs do not fight over threads.
        options = replace(job.options, threads=max(1, (os.cpu_count() or 1) // self.jobs))
        self._remaining = len(pending)

        def counted(graded: Graded) -> None:
            self._remaining -= 1
            record(graded)

        with contextlib.ExitStack() as stack:
            warm = self.warm or stack.enter_context(Warm())
            if self.jobs == 1:
                for item in pending:
                    counted(grade_item(item, job.assignment, options, job.audience, warm))
            else:
                _run_parallel(pending, job.assignment, options, self.jobs, job.audience, warm, counted)


def grade_batch(intake: Intake, assignment: Assignment, options: GradeOptions, out_dir: Path, *, jobs: int = 1,
                runner: Runner | None = None, staff: bool = False,
                on_done: Callable[[StudentOutcome, BatchProgress], None] = lambda *_: None) -> BatchReport:
    """Grade every item not already graded; every item's outcome comes back in input order.

    The runner grades (default: `LocalRunner(jobs)`); results are written (and signed) here, the
    moment each arrives, whatever the runner; a student whose files cannot be written is recorded
    and the batch goes on.
    """
    runner = runner or LocalRunner(jobs)
    # the grader's own: no student's kernel (which may run as another user) reads another's results
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ledger = Ledger(options.cache_dir)
    outcomes: dict[str, StudentOutcome] = {}
    failures: list[str] = []
    pending: list[BatchItem] = []
    for item in intake.items:
        previous = previous_result(out_dir, item, assignment.id, ledger)
        if previous is not None:
            outcomes[item.student] = StudentOutcome(item.student, previous, reused=True)
        else:
            pending.append(item)
    total = len(intake.items)
    _hand_back_reused(outcomes, out_dir)
    for count, outcome in enumerate(outcomes.values(), start=1):
        on_done(outcome, BatchProgress(done=count, total=total, graded=0, elapsed_s=0.0, workers=0))
    started = time.monotonic()
    job = BatchJob(assignment, replace(options, private_paths=(*options.private_paths, out_dir)),
                   "staff" if staff else "student")

    def record(graded: Graded) -> None:
        if graded.student in outcomes:  # a runner's duplicate (a retried task): the first result stands
            log.warning("a second result for %s was ignored", printable(graded.student))
            return
        try:
            ledger.write(graded.rendered, out_dir / graded.student)
            write_rendered(for_students(graded.rendered), out_dir / STUDENT_TREE / graded.student)
        except OSError as exc:
            failures.append(f"{graded.student}: {exc.strerror or exc} ({exc.filename or out_dir / graded.student})")
            log.error("could not write the results of %s: %s", printable(graded.student), exc)
        outcomes[graded.student] = StudentOutcome(graded.student, graded.result, reused=False)
        on_done(outcomes[graded.student],
                BatchProgress(done=len(outcomes), total=total, graded=len(outcomes) - (total - len(pending)),
                              elapsed_s=time.monotonic() - started, workers=runner.workers_in_use()))

    if pending:
        runner.run(pending, job, record)
    ordered = [outcomes[item.student] for item in intake.items if item.student in outcomes]
    write_summary(ordered, out_dir, title=f"{assignment.title} ({assignment.id})")
    return BatchReport(ordered, failures)


def for_students(rendered: Rendered) -> Rendered:
    """What a student may be handed: their feedback page only (result.json and the staff page carry
    hidden checks' inputs, expected values and messages)."""
    page = FEEDBACK_FILES["student"]
    return {page: rendered[page]} if page in rendered else {}


def _hand_back_reused(outcomes: dict[str, StudentOutcome], out_dir: Path) -> None:
    """A batch graded before the hand-back tree existed gets its pages copied there, once."""
    page = FEEDBACK_FILES["student"]
    for student in outcomes:
        target = out_dir / STUDENT_TREE / student / page
        if not target.exists():
            with contextlib.suppress(OSError):  # only the copy: the staff tree is the record
                write_rendered({page: (out_dir / student / page).read_bytes()}, target.parent)


def _run_parallel(pending: Sequence[BatchItem], assignment: Assignment, options: GradeOptions, jobs: int,
                  audience: str, warm: Warm, record: Record) -> None:
    pool, channels = _worker_pool(assignment, options, jobs, warm)
    with pool:
        futures: dict[Future, BatchItem] = {
            pool.submit(_worker_grade, item, assignment.id, options, audience): item for item in pending}
        for channel in channels:  # the workers, forked at the first submit, hold theirs
            channel.forget()
        try:
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    item = futures.pop(future)
                    try:
                        graded = future.result()
                    except GraderError:
                        raise
                    except Exception as exc:  # a worker process died: record, go on
                        graded = crashed(item, assignment, options,
                                         f"the grader's worker failed on this submission ({exc!r}); "
                                         "run the batch again to retry it", audience)
                    record(graded)
        except BaseException as stopped:
            for future in futures:
                future.cancel()
            if isinstance(stopped, KeyboardInterrupt):
                _stop_workers(pool)  # do not wait for the submissions in flight
            raise


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's workers. Their kernels die with this process's kernel image, and the next run
    sweeps the sandboxes they leave (grader.sandbox.reaping)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):  # the pool's own table
        process.kill()


def _worker_pool(assignment: Assignment, options: GradeOptions, jobs: int,
                 warm: Warm) -> tuple[ProcessPoolExecutor, list[KernelImage]]:
    """`jobs` worker processes. Forked from this one where that is safe (Linux; no thread but this one;
    no kernel started here, so no event loop or ZMQ socket to share): they start at once with this
    process's imports and assignment, and every worker forks its kernels from `warm`'s kernel image,
    each through a channel of its own (returned too: this process forgets them once the workers
    exist). Otherwise spawned, each importing the grader and starting an image of its own."""
    if sys.platform != "linux" or threading.active_count() != 1 or started_any_kernel():
        spawn = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(max_workers=jobs, mp_context=spawn, initializer=_spawned_worker,
                                   initargs=(image_request(assignment, options),)), []
    image = warm.image_for(assignment, options)
    try:
        channels = [image.attach() for _ in range(jobs)] if image is not None else []
    except ImageUnavailable:  # the workers start images of their own
        channels = []
    warm_up_kernel_start()
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_forked_worker,
                               initargs=(warm, assignment, options.course_root, channels,
                                         context.Value("i", 0), os.getpid()))
    return pool, channels


class GradingProcess:
    """A spawned worker process, for a long-running caller that grades any assignment of a course as it
    comes (the service), one submission at a time: warm state of its own, its kernel images started as
    its assignments need them, its grading's CPU work off the caller's interpreter. If it dies, the
    submission it held fails with BrokenProcessPool, and the next one gets a new process."""

    def __init__(self, audience: str):
        self.audience = audience
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the process now (it imports the grader), not with the first submission."""
        self._started().submit(os.getpid)

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_spawned_worker, initargs=(None,))
        return self._pool

    def grade(self, item: BatchItem, assignment_id: str, options: GradeOptions) -> Graded:
        try:
            return self._started().submit(_worker_grade, item, assignment_id, options, self.audience).result()
        except BrokenProcessPool:
            self.close()
            raise

    def close(self) -> None:
        """End the process now, whatever it is doing (its kernels end with its kernel image)."""
        if self._pool is not None:
            _stop_workers(self._pool)
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _spawned_worker(wanted: tuple[tuple[str, ...], tuple[str, ...]] | None) -> None:
    """A spawned worker's start: warm state of its own, its kernel image importing at once. Never raises
    (a failed image only means cold kernels, which the first sandbox records)."""
    warm = Warm()
    _own_worker_warm(warm)
    if wanted:
        with contextlib.suppress(Exception):  # see the docstring
            warm.images.get(*wanted)


def _forked_worker(batch: Warm, assignment: Assignment, course_root: Path, channels: list[KernelImage], handout,
                   parent: int) -> None:
    """A forked worker's start: die with the batch, let go of the batch's warm state (a copy, which
    the batch owns), and keep warm state of its own: the batch's assignment, and one channel to the
    batch's kernel image."""
    _die_with(parent)
    with handout.get_lock():
        index = handout.value
        handout.value += 1
    batch.images.forget()
    mine = channels[index] if index < len(channels) else None
    for channel in channels:
        if channel is not mine:
            channel.forget()
    warm = Warm()
    _own_worker_warm(warm)
    warm.keep(course_root, assignment)
    # a worker beyond the channels made (a pool that replaced a dead worker) must not share one, or
    # replies would cross: it starts an image of its own
    if mine is not None:
        warm.images.adopt(mine)


def _die_with(parent: int) -> None:
    """A forked worker holds copies of the batch's pipes, so it would never see the batch end: the
    kernel kills it when the batch process ends, however it ends."""
    try:
        launch.die_with(parent)
    except launch.LaunchError:  # the batch ended before this worker could follow it
        os._exit(1)


def write_summary(outcomes: list[StudentOutcome], out_dir: Path, *, title: str) -> Path:
    entries = [SummaryEntry(result=o.result, feedback_href=f"{o.student}/feedback.html") for o in outcomes]
    return write_class_summary(entries, out_dir / "summary.html", title=title)


def elapsed_text(start: float) -> str:
    seconds = time.monotonic() - start
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.1f} s"
