"""Grade a batch on the workers of a Dask distributed cluster (`grader batch --scheduler tcp://HOST:8786`).

The client (the `grader batch` process) stays the batch's one writer: it
submits one task per pending submission, takes the results as they complete
and hands each to the same `record` the local runner uses, so results are
written and signed the moment they arrive and a resumed batch behaves as
today. Workers grade with their own sandbox, data root and caches.

What travels to a worker with each task: the submission's bytes, the
assignment's spec module (solutions/<id>.py, never the reference notebook),
the grading options, and the data root only where the client named one
(`--data-root` on a shared file system); otherwise each worker uses its own
(GRADER_DATA there, or its cache).

A worker that dies while grading (killed, out of memory) makes the scheduler
run the task again on another worker. Each worker counts the starts of a
submission in the scheduler's metadata before grading it: a submission that
was already started twice, and so stopped two graders, is not graded again
but recorded as a zero that says so, so one hostile notebook cannot take the
cluster down one worker at a time.

Model-training assignments (a spec with `resources`) go to workers started
with `--resources GPU=1`, graded there with device cuda, when the cluster has
any; everything else may run on any worker, with device cpu.

`distributed` is imported only here, and only when a batch asks for a
scheduler: it is an optional extra (`pip install 'grader[dask]'`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grader
from grader.compat import serialize_ast_parsing
from grader.course.assignment import Assignment
from grader.errors import GraderError, HarnessError, UsageError
from grader.grading.batch import BatchJob, Graded, Record, crashed, grade_item
from grader.grading.options import GradeOptions
from grader.grading.warm import Warm
from grader.intake.collect import BatchItem
from grader.intake.notebooks import sha256_of
from grader.sandbox.reaping import sweep_what_dead_graders_left

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

GPU_RESOURCE = "GPU"  # the resource name a GPU worker is started with: dask worker ... --resources GPU=1
MAX_STARTS = 2  # a submission whose grading stopped this many workers is not started again
STOPPED_TWO = "this notebook stopped two graders; it was not retried further"
METADATA_ROOT = "grader"  # the scheduler's metadata: METADATA_ROOT / batch id / student -> starts
TASK_PREFIX = "grader-batch"  # task keys: (TASK_PREFIX, batch id, student, submission attempt)
NETWORKED_MODES = ("user", "none")  # sandbox modes whose kernel keeps the network


# --------------------------------------------------------------------------
# What a task carries


@dataclass(frozen=True)
class CourseBundle:
    """One assignment's spec module, as the client ships it to workers."""

    assignment_id: str
    spec_name: str  # file name under solutions/
    spec: bytes

    @classmethod
    def of(cls, assignment: Assignment) -> CourseBundle:
        if assignment.source is None or not Path(assignment.source).is_file():
            raise UsageError(f"the spec of {assignment.id} is not a file this grader can ship to workers")
        source = Path(assignment.source)
        return cls(assignment.id, source.name, source.read_bytes())

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.spec_name.encode() + b"\0" + self.spec).hexdigest()

    def unpack(self, into: Path) -> Path:
        """Write the course (solutions/<spec>) into a new private directory under `into`; its root."""
        into.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="grader-course-", dir=into))
        (root / "solutions").mkdir(mode=0o700)
        (root / "solutions" / self.spec_name).write_bytes(self.spec)
        return root


@dataclass(frozen=True)
class Submission:
    item: BatchItem  # the client's item; only its notebook's file name is used on the worker
    content: bytes


@dataclass(frozen=True)
class RemoteJob:
    """Everything but the submission that a worker needs to grade."""

    bundle: CourseBundle
    options: GradeOptions  # the client's; course, data root, cache and device are the worker's own
    audience: str
    device: str  # "cpu" | "cuda", chosen by the client for the workers this task may run on
    data_root: Path | None  # the client's --data-root (a shared file system), else None: the worker's own
    batch_id: str
    grader_version: str = grader.__version__


@dataclass(frozen=True)
class Placement:
    """Where a batch's tasks may run and with which device."""

    device: str
    resources: Mapping[str, float] | None = None

    def describe(self) -> str:
        return f"device {self.device}" + (f", on workers with {GPU_RESOURCE}" if self.resources else "")


def place(assignment: Assignment, requested: str, workers: Mapping[str, Mapping[str, Any]]) -> Placement:
    """Model-training work on GPU workers (device cuda) when there are any; the rest anywhere, on cpu.

    `requested` is --device: auto routes as above, cpu keeps everything on cpu, cuda insists on GPU workers.
    `workers` is the scheduler's view: address -> info with "resources".
    """
    has_gpu = any(info.get("resources", {}).get(GPU_RESOURCE, 0) >= 1 for info in workers.values())
    if requested == "cpu":
        return Placement("cpu")
    if requested == "cuda" and not has_gpu:
        raise UsageError(f"--device cuda was asked for, but no worker of the cluster was started with "
                         f"--resources {GPU_RESOURCE}=1")
    if has_gpu and (requested == "cuda" or assignment.resources is not None):
        return Placement("cuda", {GPU_RESOURCE: 1})
    return Placement("cpu")


# --------------------------------------------------------------------------
# The worker's side


class WorkerState:
    """What one Dask worker keeps between submissions: its warm state (grader.grading.warm), the courses
    it unpacked, the checks it made once. Made and closed by the worker's plugin (dask_plugin.py)."""

    def __init__(self) -> None:
        serialize_ast_parsing()  # a worker with --nthreads above 1 grades in threads
        self.warm = Warm()
        self.courses: dict[str, Path] = {}  # bundle digest -> the course root it was unpacked into
        self.checked: set[tuple] = set()
        self._lock = threading.Lock()  # a worker grades in threads

    def close(self) -> None:
        self.warm.close()

    def assignment(self, bundle: CourseBundle, scratch: Path) -> Assignment:
        with self._lock:
            if bundle.digest not in self.courses:
                self.courses[bundle.digest] = bundle.unpack(scratch)
        return self.warm.assignment(self.courses[bundle.digest], bundle.assignment_id)

    def check_once(self, job: RemoteJob, nthreads: int, scheduler: str) -> None:
        """Refuse, with a reason, a worker that would grade wrongly or unsafely; each question asked once
        per process."""
        key = (job.grader_version, job.device, job.options.isolation, job.options.sandbox_user, nthreads, scheduler)
        if key in self.checked:
            return
        if job.grader_version != grader.__version__:
            raise HarnessError(f"this worker has grader {grader.__version__} and the client {job.grader_version}; "
                               "install the same version on both")
        if job.device == "cuda" and not _cuda_available():
            raise HarnessError(f"this worker was started with --resources {GPU_RESOURCE}=1, but torch sees no "
                               "CUDA device on it")
        from grader.sandbox.detect import choose_isolation

        mode = choose_isolation(job.options.isolation, user=job.options.sandbox_user)
        if mode in NETWORKED_MODES and not scheduler.startswith("tls://"):
            # Anyone who reaches a scheduler without TLS can run code on its workers, as the worker's user.
            raise UsageError(f"the sandbox here is '{mode}', where student code has the network and could reach "
                             "the Dask scheduler, and through it run code as this worker: give the workers a "
                             "sandbox with namespaces (bwrap or unshare), or secure the cluster with TLS")
        if mode == "user" and nthreads > 1:
            raise UsageError("the 'user' sandbox grades one submission at a time: start this worker with "
                             "--nthreads 1, or give it a sandbox with namespaces")
        sweep_what_dead_graders_left()  # a killed worker's tmpfs and cgroups
        self.checked.add(key)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def grade_on_worker(submission: Submission, job: RemoteJob) -> Graded:
    """The task: grade one submission on this worker and render its files (the client writes them)."""
    from distributed import get_worker

    from grader.grading.dask_plugin import PLUGIN_NAME

    worker = get_worker()
    name = str(worker.name)
    scratch = Path(worker.local_directory)
    state = getattr(worker.plugins.get(PLUGIN_NAME), "state", None)
    try:
        if not isinstance(state, WorkerState):
            raise HarnessError("this worker has no grader plugin (the batch's client registers it before "
                               "submitting): was the worker restarted mid-batch? run the same command again")
        state.check_once(job, worker.state.nthreads, str(worker.scheduler.address))
        assignment = state.assignment(job.bundle, scratch)
        options = _worker_options(job, assignment, worker.state.nthreads)
        if _count_start(job.batch_id, submission.item.student) > MAX_STARTS:
            # the notebook's digest: a resumed batch keeps this zero rather than lose two more workers
            return crashed(submission.item, assignment, options, STOPPED_TWO, job.audience,
                           sha256=hashlib.sha256(submission.content).hexdigest())
        with tempfile.TemporaryDirectory(prefix="grader-submission-", dir=scratch) as folder:
            path = Path(folder) / Path(submission.item.notebook).name
            path.write_bytes(submission.content)
            return grade_item(replace(submission.item, notebook=path), assignment, options, job.audience,
                              state.warm, worker=name)
    except GraderError as exc:
        raise type(exc)(f"on worker {name}: {exc.message}") from None


def _worker_options(job: RemoteJob, assignment: Assignment, nthreads: int) -> GradeOptions:
    from grader.locations import cache_dir, default_data_root

    assert assignment.source is not None, "a worker's assignment is loaded from the course bundle's files"
    course_root = Path(assignment.source).parent.parent
    return replace(job.options, course_root=course_root, data_root=(job.data_root or default_data_root()).resolve(),
                   cache_dir=cache_dir(), device=job.device,
                   threads=max(1, (os.cpu_count() or 1) // max(1, nthreads)))


def _count_start(batch_id: str, student: str) -> int:
    """This start of the student's grading, counted in the scheduler (which outlives any worker): 1, 2, ..."""
    from distributed import get_client

    client = get_client()
    key = [METADATA_ROOT, batch_id, student]
    starts = int(client.get_metadata(key, default=0)) + 1
    client.set_metadata(key, starts)
    return starts


# --------------------------------------------------------------------------
# The client's side


class DaskRunner:
    """A batch runner that grades on the workers of the Dask scheduler at `address`."""

    def __init__(self, address: str, *, device: str = "auto", data_root: Path | None = None,
                 connect_timeout_s: float = 30.0):
        self.address = address
        self.device = device
        self.data_root = data_root
        self.connect_timeout_s = connect_timeout_s
        self._client: Client | None = None

    def describe(self) -> str:
        return f"on the Dask cluster at {self.address}"

    def workers_in_use(self) -> int:
        if self._client is None:
            return 0
        try:
            return sum(1 for keys in self._client.processing().values() if keys)
        except Exception:  # only for the progress display
            return 0

    def run(self, pending: Sequence[BatchItem], job: BatchJob, record: Record) -> None:
        require_dask()
        from distributed import Client

        try:
            client = Client(self.address, timeout=self.connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {self.address} ({exc})") from None
        from grader.grading.dask_plugin import WarmWorkerPlugin

        with client:
            client.register_plugin(WarmWorkerPlugin(WorkerState))  # on every worker, now and later
            self._client = client
            try:
                self._run(client, pending, job, record)
            finally:
                self._client = None

    def _run(self, client, pending: Sequence[BatchItem], job: BatchJob, record: Record) -> None:
        from distributed import as_completed

        try:
            client.wait_for_workers(1, timeout=self.connect_timeout_s)
        except TimeoutError:
            raise HarnessError(f"the Dask scheduler at {self.address} has no workers: start some with "
                               f"`dask worker {self.address} --nthreads 1`") from None
        placement = place(job.assignment, self.device, client.scheduler_info(n_workers=-1)["workers"])
        log.info("grading %s (%s)", job.assignment.id, placement.describe())
        remote = RemoteJob(bundle=CourseBundle.of(job.assignment), options=job.options, audience=job.audience,
                           device=placement.device, data_root=self.data_root, batch_id=uuid.uuid4().hex)
        tasks = _Tasks(client, remote, placement)
        for item in pending:
            if not tasks.submit(item):
                with Warm() as warm:  # unreadable here: its result says so, made here
                    record(grade_item(item, job.assignment, job.options, job.audience, warm))
        completed = as_completed(list(tasks.items), loop=client.loop)
        try:
            for future in completed:
                graded = tasks.outcome(future, job)
                if isinstance(graded, Graded):
                    record(graded)
                elif graded is not None:
                    completed.add(graded)  # resubmitted
        except BaseException:
            client.cancel(list(tasks.items))
            raise
        finally:
            tasks.forget()


def _digest(item: BatchItem) -> str:
    try:
        return sha256_of(item.notebook)
    except OSError:
        return ""


class _Tasks:
    """The batch's futures: one per pending student, resubmitted where the scheduler gave up on it."""

    def __init__(self, client, remote: RemoteJob, placement: Placement):
        self.client = client
        self.remote = remote
        self.placement = placement
        self.items: dict[Any, tuple[BatchItem, int]] = {}  # future -> (item, submission attempt)

    def submit(self, item: BatchItem, attempt: int = 0):
        """The item's future, or None when the client cannot read the notebook."""
        try:
            content = Path(item.notebook).read_bytes()
        except OSError:
            return None
        future = self.client.submit(grade_on_worker, Submission(item, content), self.remote,
                                    key=(TASK_PREFIX, self.remote.batch_id, item.student, attempt),
                                    resources=dict(self.placement.resources) if self.placement.resources else None,
                                    retries=0, pure=False)
        self.items[future] = (item, attempt)
        return future

    def starts(self, item: BatchItem) -> int:
        return int(self.client.get_metadata([METADATA_ROOT, self.remote.batch_id, item.student], default=0))

    def outcome(self, future, job: BatchJob):
        """A Graded; or a new future where the scheduler gave up on a task that was not started twice."""
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        item, attempt = self.items.pop(future)
        try:
            return future.result()
        except GraderError:
            raise
        except KilledWorker:
            # The scheduler stopped rescheduling it (its allowed-failures): was it started twice, or only
            # queued on workers that died of something else?
            if self.starts(item) >= MAX_STARTS:
                return crashed(item, job.assignment, job.options, STOPPED_TWO, job.audience,
                               sha256=_digest(item))
            if attempt < MAX_STARTS:
                return self.submit(item, attempt + 1) or crashed(
                    item, job.assignment, job.options, "the grader could not read this notebook again "
                    "after its worker died; run the batch again to retry it", job.audience)
            return crashed(item, job.assignment, job.options, "the cluster's workers kept dying before this "
                           "submission could be graded; run the batch again to retry it", job.audience)
        except FutureCancelledError:
            raise HarnessError(f"the Dask scheduler at {self.client.scheduler.address} cancelled the batch's "
                               "tasks (was it restarted?); run the same command again to resume") from None
        except Exception as exc:  # the worker failed outside grading: record, go on
            return crashed(item, job.assignment, job.options,
                           f"the grader's worker failed on this submission ({type(exc).__name__}: {exc}); "
                           "run the batch again to retry it", job.audience)
        finally:
            future.release()

    def forget(self) -> None:
        """Drop the batch's start counts from the scheduler's metadata."""
        with contextlib.suppress(Exception):  # the scheduler may be gone; the counts die with it
            self.client.set_metadata([METADATA_ROOT, self.remote.batch_id], {})


def require_dask() -> None:
    """Dask is an optional extra: --scheduler without it says how to get it, before any grading starts."""
    try:
        import distributed  # noqa: F401 - only whether it imports
    except ImportError:
        raise UsageError("--scheduler grades on a Dask cluster, and Dask is not installed here: "
                         "pip install 'grader[dask]' (its workers need it too)") from None
