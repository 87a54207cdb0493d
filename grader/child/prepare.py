"""Run once in a fresh kernel, before the student's first cell."""

import importlib
import os
import random
import sys

from . import protocol, wire


class _BlockedImport:
    """Fallback when the sandbox cannot hide a module's files: refuse to import it."""

    def __init__(self, names, reason):
        self.names = set(names)
        self.reason = reason

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} ({self.reason})", name=fullname)
        return None


def run(in_dir):
    """Apply the grader's Prepare request (grader_child.protocol) found in in_dir."""
    request = protocol.from_wire(protocol.Prepare, wire.load(in_dir))
    if request.blocked_modules:
        sys.meta_path.insert(0, _BlockedImport(request.blocked_modules, request.block_reason))
    for helper in request.helpers:
        importlib.import_module(f"grader_child.{helper}")
    random.seed(request.seed)
    try:
        import numpy
        numpy.random.seed(request.seed)
    except ImportError:
        pass
    os.environ.setdefault("MPLBACKEND", "Agg")
