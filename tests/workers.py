"""Tests that run beside other pytest-xdist workers (`pytest -n N`): what on the machine is another
worker's.

A worker's processes descend from it, and so do the graders it starts, their kernels and their
sandboxes (each sandbox's root names its owner process). A check for leftovers looks past what
descends from another worker that is still running, and sees everything else: a process that escaped
to init, a cgroup or mount whose owner is gone or is this worker. Run serially, nothing is another
worker's and the checks see the whole machine, as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path
from typing import IO

import pytest

from grader.sandbox.reaping import OWNER_FILE

WORKER = os.environ.get("PYTEST_XDIST_WORKER")
MACHINE_TEMP = Path(tempfile.gettempdir())  # where graders make their sandboxes when no worker moves them
WORKER_TEMP_ROOT = MACHINE_TEMP / "worker-temp"  # each worker's temp directory, under a fixed root

# Tests that grade in the "user" sandbox mode (an LMS container without namespaces, as nobody or the LMS
# image's grader-student) or sweep a sandbox user's leftovers act on all that user has on the machine,
# as the mode's documentation says: they run on one worker, one after another (`--dist loadgroup`).
SANDBOX_USER_GROUP = pytest.mark.xdist_group("sandbox-user")


def use_own_temp_dir() -> None:
    """Give this worker its own temp directory (for its sandboxes and kernel images, and those of the
    graders it starts): a killed grader's sandboxes are then swept by this worker's next grader, as in a
    serial run, and never by a grader of another worker halfway through a test that reads its log."""
    if WORKER is None:
        return
    own = WORKER_TEMP_ROOT / WORKER
    own.mkdir(parents=True, exist_ok=True)
    WORKER_TEMP_ROOT.chmod(0o755)
    own.chmod(0o1777)  # like /tmp: a sandbox's user may need to pass through, as through /tmp
    os.environ["TMPDIR"] = str(own)
    tempfile.tempdir = None  # found again from TMPDIR


def _parents() -> dict[int, int]:
    parents = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def another_workers_processes() -> set[int]:
    """Every process that descends from another pytest-xdist worker of this run (none when serial), as
    the machine is now: list what to check before asking, since a process born after this call is not
    in it, whoever started it."""
    if WORKER is None:
        return set()
    parents = _parents()
    controller = os.getppid()
    found = {pid for pid, parent in parents.items() if parent == controller and pid != os.getpid()}
    frontier = set(found)
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def owned_by_another_worker(sandbox_root: Path, others: set[int]) -> bool:
    """Whether the sandbox at `sandbox_root` is another worker's: in its temp directory (a sandbox its
    killed grader left is swept by its next one), or owned by one of its live processes."""
    if WORKER is not None and sandbox_root.parent.parent == WORKER_TEMP_ROOT and sandbox_root.parent.name != WORKER:
        return True
    try:
        record = json.loads((sandbox_root / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("pid") in others


def cgroups_of_other_workers(others: set[int]) -> set[str]:
    """The cgroup directories listed by other workers' sandboxes."""
    found: set[str] = set()
    for root in [*MACHINE_TEMP.glob("grader-*"), *WORKER_TEMP_ROOT.glob("*/grader-*")]:
        if owned_by_another_worker(root, others):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                found.update(json.loads((root / OWNER_FILE).read_text()).get("cgroups", []))
    return found


class MachineShare:
    """This worker's hold on the machine: shared with the other workers for an ordinary test, alone for a
    SANDBOX_USER_GROUP test (its user-mode and no-isolation grades share the sandbox user's thread
    count and leftovers with every other kernel). Shared is let go after each test, so that a worker
    waiting to be alone gets in; alone is kept while the group's tests follow one another, so that the
    machine is drained once for them, not once each. A turnstile lets a waiting exclusive holder in
    before new shared ones."""

    def __init__(self) -> None:
        self._files: list[IO[str]] = []
        self.exclusive: bool | None = None  # None: not held

    def take(self, *, exclusive: bool) -> None:
        if WORKER is None or (exclusive and self.exclusive):  # alone already: kept across the group
            return
        self.let_go()
        WORKER_TEMP_ROOT.mkdir(parents=True, exist_ok=True)
        turnstile = open(WORKER_TEMP_ROOT / "turnstile.lock", "a")  # noqa: SIM115 - held past this call
        machine = open(WORKER_TEMP_ROOT / "machine.lock", "a")  # noqa: SIM115
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(machine, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            turnstile.close()
            self._files = [machine]
        else:
            self._files = [turnstile, machine]
        self.exclusive = exclusive

    def let_go(self, *, unless_exclusive_next: bool = False) -> None:
        if self.exclusive and unless_exclusive_next:
            return
        for file in self._files:
            file.close()  # closing lets the lock go
        self._files, self.exclusive = [], None
