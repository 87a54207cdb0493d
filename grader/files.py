"""Files written whole or not at all: every file the grader writes for another process to read (results,
caches, the LMS's results file, a sandbox's owner record) goes through here, so that a reader sees the
old file or the new one, never half of one, whatever kills the writer."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomically(path: Path, content: bytes, *, durable: bool = False) -> Path:
    """Write `content` to a partial file beside `path`, then move it into place in one step; `durable`:
    on the disk itself before it is moved (what a crash right after must not lose)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(partial, "wb") as file:
            file.write(content)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
