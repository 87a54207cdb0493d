"""Which grading servers are alive, so that several can share one database and state directory, and a
dead one's submissions are graded by the others without waiting for a restart.

Each running server holds an exclusive lock on a file named after it, `<state>/servers/<id>.lock`. The
kernel drops the lock when the process dies, SIGKILL included, so a server that can take another's lock
knows that one is dead at once. A server on another machine (a state directory on a shared file system
without working locks) is known dead when the leases on its claims (queue.LEASE_S) run out.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


class ServerLock:
    """This server's name and its held lock; `close` gives both up (a clean stop)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.id = uuid.uuid4().hex
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Locked before it gets the name the others look for: never seen unlocked, so never taken for dead.
        starting = folder / f".{self.id}.starting"
        self._descriptor = os.open(starting, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)
        os.rename(starting, self.path)

    @property
    def path(self) -> Path:
        return self.folder / f"{self.id}.lock"

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self._descriptor)


@contextlib.contextmanager
def dead_servers(folder: Path, alive: str) -> Iterator[list[str]]:
    """The servers of `folder` whose process is gone (their lock was free), held while the caller hands
    their claims back; their lock files are removed afterwards."""
    found: list[tuple[str, int]] = []
    try:
        for path in sorted(folder.glob("*.lock")):
            if path.stem == alive:
                continue
            try:
                descriptor = os.open(path, os.O_RDWR)
            except FileNotFoundError:  # another server cleared it first
                continue
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # alive
                os.close(descriptor)
                continue
            found.append((path.stem, descriptor))
        yield [server for server, _ in found]
        for server, _ in found:
            (folder / f"{server}.lock").unlink(missing_ok=True)
    finally:
        for _, descriptor in found:
            os.close(descriptor)
