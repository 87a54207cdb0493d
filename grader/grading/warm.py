"""What a process keeps warm between submissions, and its one owner.

Each command, batch worker and Dask worker creates one `Warm` and passes it down to every grade: the
kernel images its kernels fork from, trainers that have already imported torch, the assignments it
loaded and their datasets and baselines. Closing it (the end of its `with` block) ends the images and
the waiting trainers; nothing is left to a module global or an exit hook.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.errors import HarnessError
from grader.grading.options import GradeOptions
from grader.locations import ResourceRequest
from grader.sandbox.detect import unshare_available
from grader.sandbox.image import BASE_MODULES, KernelImage, KernelImages

# Light to import (the course's specs, the checks and torch's helpers come with their first use), so that
# a command can start its kernel image before it loads any of them: see start_image_ahead.
if TYPE_CHECKING:
    from grader.course.assignment import Assignment
    from grader.ml.training import Trainers


class Warm:
    """One process's warm state (see the module's docstring). Safe to share between the threads of a
    Dask worker; never between processes (a forked batch worker adopts a channel instead: `images.adopt`)."""

    def __init__(self, *, contended: bool | None = None) -> None:
        """`contended`: how busy others kept the machine before this owner's work began, where the owner
        judged it then (see Trainers.contended)."""
        self.contended = contended
        self.images = KernelImages()
        self._trainers: Trainers | None = None
        self._trainers_made = threading.Lock()  # not _lock: that one is held while a dataset loads
        self._resources: dict[tuple, Any] = {}
        self._assignments: dict[tuple[str, str], tuple[Assignment, int]] = {}  # with its spec's mtime
        self._lock = threading.Lock()

    def __enter__(self) -> Warm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def trainers(self) -> Trainers:
        """The trainers, made on first use (torch's helpers are not imported for a NumPy assignment)."""
        from grader.ml.training import Trainers

        with self._trainers_made:
            if self._trainers is None:
                self._trainers = Trainers(contended=self.contended)
            return self._trainers

    def close(self) -> None:
        if self._trainers is not None:
            self._trainers.close()
        self.images.close()

    def close_in_background(self) -> threading.Thread:
        """`close` in a thread of its own, returned started (join it): the processes' ends (a kill and a wait
        each, 0.1 s for a trainer that held a dataset) then overlap the caller's next work."""
        closing = threading.Thread(target=self.close, name="grader-warm-close")
        closing.start()
        return closing

    def start_image_ahead(self, options: GradeOptions) -> None:
        """Start the kernel image before the assignment is loaded (its imports then run beside the
        grader's), where an image may be used; `image_for` settles it."""
        if images_allowed(options):
            self.images.start_ahead()

    def image_for(self, assignment: Assignment, options: GradeOptions) -> KernelImage | None:
        """The kernel image for the assignment's kernels (started on first use), or None where kernels
        start cold."""
        wanted = image_request(assignment, options)
        return self.images.get(*wanted) if wanted else None

    def resources(self, assignment: Assignment, options: GradeOptions) -> Any:
        """The datasets and baselines an assignment prepares in the grader, once per owner."""
        from grader.ml.datasets import DatasetMissing

        if assignment.resources is None:
            return None
        key = (assignment.id, assignment.resources, str(options.data_root), str(options.cache_dir), options.device)
        with self._lock:  # two threads of a Dask worker prepare them once
            if key not in self._resources:
                try:
                    self._resources[key] = assignment.resources(ResourceRequest(
                        data_root=options.data_root, cache_dir=options.cache_dir, device=options.device))
                except DatasetMissing as exc:
                    raise HarnessError(f"{assignment.id} needs data the grader does not have: {exc}") from None
            return self._resources[key]

    def assignment(self, course_root: Path, assignment_id: str) -> Assignment:
        """The course's assignment, loaded once by this owner, and again when its spec file changes (a
        long-running service regrading after a fix)."""
        from grader.course.assignment import find_assignment

        key = (str(course_root), assignment_id)
        with self._lock:
            kept = self._assignments.get(key)
            if kept is None or kept[1] != _modified(kept[0]):
                loaded = find_assignment(course_root, assignment_id)
                self._assignments[key] = kept = (loaded, _modified(loaded))
            return kept[0]

    def keep(self, course_root: Path, assignment: Assignment) -> None:
        """Hold an assignment already loaded (a batch hands its own to the workers it forks)."""
        with self._lock:
            self._assignments[(str(course_root), assignment.id)] = (assignment, _modified(assignment))


def _modified(assignment: Assignment) -> int:
    try:
        return Path(assignment.source).stat().st_mtime_ns if assignment.source else 0
    except OSError:
        return 0


def images_allowed(options: GradeOptions) -> bool:
    """Whether kernels may fork from an image: the grader's own namespaces work here and no stronger or
    weaker mode was asked for."""
    return options.kernel_image and not options.own_code and options.isolation in ("auto", "unshare") \
        and unshare_available()


def image_request(assignment: Assignment, options: GradeOptions) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """What the assignment's kernel image imports and must never hold, where an image may be used."""
    if not images_allowed(options):
        return None
    wanted = (*BASE_MODULES, *(f"grader_child.{helper}" for helper in assignment.child_helpers))
    return tuple(m for m in wanted if m.split(".")[0] not in assignment.blocked_modules), assignment.blocked_modules
