"""The service's queue graded on a Dask cluster (`grader serve --scheduler`): each grading thread sends
its submission as the task `grader batch --scheduler` sends (grader.grading.distributed.grade_on_worker),
so a worker grades it with a batch's warm state, sandbox checks and device placement."""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from grader.errors import UsageError
from grader.grading.batch import Graded
from grader.grading.distributed import (
    METADATA_ROOT,
    CourseBundle,
    RemoteJob,
    Submission,
    WorkerState,
    grade_on_worker,
    place,
    require_dask,
)
from grader.grading.options import GradeOptions
from grader.grading.warm import Warm
from grader.intake.collect import BatchItem
from grader.service.worker import LaneUnavailable, WorkerDied

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)
TASK_PREFIX = "grader-serve"


class Cluster:
    """One client of the scheduler at `address`: the lane of every grading thread of the service (the
    scheduler spreads their submissions over its workers)."""

    def __init__(self, address: str, *, device: str, data_root: Path | None, connect_timeout_s: float = 30.0):
        self.address = address
        self.device = device  # --device: where the cluster's workers train (place())
        self.data_root = data_root  # the client's --data-root, shared with the workers; None: each worker's own
        self.connect_timeout_s = connect_timeout_s
        self._client: Client | None = None
        self._assignments = Warm()  # only its assignments: the specs shipped to workers, reloaded on change

    def connect(self) -> int:
        """Connect and register the grader's plugin on every worker, now and later; the threads the
        cluster's workers have now (at least 1): how many submissions to keep in flight by default."""
        require_dask()
        from distributed import Client

        from grader.grading.dask_plugin import WarmWorkerPlugin

        try:
            client = Client(self.address, timeout=self.connect_timeout_s, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"cannot reach the Dask scheduler at {self.address} ({exc})") from None
        client.register_plugin(WarmWorkerPlugin(WorkerState))
        self._client = client
        workers = client.scheduler_info(n_workers=-1)["workers"]
        return max(1, sum(int(info.get("nthreads", 1)) for info in workers.values()))

    def start(self) -> None:
        pass  # connected once, before the grading threads start: every thread's lane is this cluster

    def close(self) -> None:
        """Disconnect (every lane closes it: the first one does)."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # the scheduler may be gone already
                client.close()
            self._assignments.close()

    def grade(self, item: BatchItem, assignment_id: str, options: GradeOptions) -> Graded:
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        client = self._client
        if client is None:
            raise LaneUnavailable(f"the service is not connected to the Dask scheduler at {self.address}")
        assignment = self._assignments.assignment(options.course_root, assignment_id)
        try:
            placement = place(assignment, self.device, client.scheduler_info(n_workers=-1)["workers"])
        except OSError as exc:
            raise LaneUnavailable(f"the Dask scheduler at {self.address} does not answer ({exc})") from None
        remote = RemoteJob(bundle=CourseBundle.of(assignment), options=options, audience="student",
                           device=placement.device, data_root=self.data_root, batch_id=f"serve-{uuid.uuid4().hex}")
        future = client.submit(grade_on_worker, Submission(item, Path(item.notebook).read_bytes()), remote,
                               key=(TASK_PREFIX, remote.batch_id, item.student),
                               resources=dict(placement.resources) if placement.resources else None,
                               retries=0, pure=False)
        try:
            return future.result()
        except KilledWorker:  # the workers that took it died (the scheduler's allowed-failures spent)
            raise WorkerDied from None
        except (FutureCancelledError, OSError) as exc:
            raise LaneUnavailable(f"the Dask scheduler at {self.address} lost the task ({exc})") from None
        finally:
            future.release()
            with contextlib.suppress(Exception):  # the start counts of this one task
                client.set_metadata([METADATA_ROOT, remote.batch_id], {})

