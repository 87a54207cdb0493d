"""Files written whole or not at all: every file the grader writes for another process to read (results,
caches, the LMS's results file, a sandbox's owner record) goes through here, so that a reader sees the
old file or the new one, never half of one, whatever kills the writer."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomically(path: Path, content: bytes) -> Path:
    """Write `content` to a partial file beside `path`, then move it into place in one step."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        partial.write_bytes(content)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
