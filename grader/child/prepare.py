"""Run once in a fresh kernel, before the student's first cell."""

import importlib
import os
import random
import sys


class _BlockedImport:
    """Fallback when the sandbox cannot hide a module's files: refuse to import it."""

    def __init__(self, names, reason):
        self.names = set(names)
        self.reason = reason

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} ({self.reason})", name=fullname)
        return None


def prepare(seed, blocked_modules=(), block_reason="", helpers=()):
    if blocked_modules:
        sys.meta_path.insert(0, _BlockedImport(blocked_modules, block_reason))
    for helper in helpers:
        importlib.import_module(f"grader_child.{helper}")
    random.seed(seed)
    try:
        import numpy
        numpy.random.seed(seed)
    except ImportError:
        pass
    os.environ.setdefault("MPLBACKEND", "Agg")
