"""Answer the grader's questions about the student's namespace.

Every entry point writes exactly one answer into `out_dir` (`calls`, one per
call into each of its directories): {"ok": value} or {"error": {...}}.
Student exceptions never escape, so a probe cell fails only if the probe
itself was broken, or (in `calls`) when the grader interrupts it.
"""

import os
import sys
import time
import traceback

from . import protocol, wire


class Missing(Exception):
    """A name the grader needs is not defined in the notebook."""


def _cell_number(filename):
    """The execution count of the cell that defined `filename`, if it was a cell."""
    try:
        return get_ipython().compile._filename_map.get(filename)  # noqa: F821 - an IPython builtin
    except Exception:
        return None


def _student_frames(tb):
    """The traceback in the student's own frames: cells, not libraries or the grader."""
    here = os.path.dirname(__file__)
    libraries = (sys.prefix, sys.base_prefix, here)
    frames = []
    for frame in traceback.extract_tb(tb):
        number = _cell_number(frame.filename)
        if number is not None:
            where = f"Cell In[{number}], line {frame.lineno}, in {frame.name}"
        elif frame.filename.startswith(libraries) or "site-packages" in frame.filename:
            continue
        else:
            where = f"File {frame.filename}:{frame.lineno}, in {frame.name}"
        frames.append(f"{where}\n    {(frame.line or '').strip()}\n")
    return frames


def _error(exc, name):
    return {"error": {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback": _student_frames(exc.__traceback__)[-10:],
        "function": name,
    }}


def _defined(namespace, name):
    """The notebook's `name`; Missing when the notebook does not define it."""
    if name not in namespace:
        raise Missing(f"{name} is not defined")
    return namespace[name]


def _lookup(namespace, name):
    try:
        return _defined(namespace, name), None
    except Missing as exc:
        return None, _error(exc, name)


def call(namespace, name, in_dir, out_dir):
    """Call the student's `name(*args, **kwargs)` with arguments the parent wrote."""
    _write(_called(namespace, name, lambda: protocol.from_wire(protocol.Call, wire.load(in_dir))), out_dir)


def calls(namespace, in_dir, progress_dir, *out_dirs):
    """Several calls in turn (protocol.Calls), each answer written to its own directory as soon as it is
    known. Before each call, `progress_dir` says which one starts, and when, beside when the cell did: if
    the cell runs out of time, the parent knows how long the calls before the last one took."""
    request = protocol.from_wire(protocol.Calls, wire.load(in_dir))
    cell_at = time.monotonic()
    for index, (name, arguments, out_dir) in enumerate(zip(request.names, request.calls, out_dirs, strict=True)):
        wire.dump({"call": index, "at": time.monotonic(), "cell_at": cell_at}, progress_dir)
        answer = _called(namespace, name, lambda arguments=arguments: protocol.Call(**arguments), interruptible=True)
        _dump(answer, out_dir)
        if "error" in answer and not request.keep_going:
            break
    sys.stdout.flush()


def _called(namespace, name, arguments, *, interruptible=False):
    """The answer of `name(*args, **kwargs)`. With `interruptible`, the parent's interrupt (its time
    limit) ends the whole cell instead of becoming this call's answer."""
    fn, answer = _lookup(namespace, name)
    if answer is not None:
        return answer
    if not callable(fn):
        return {"error": {"type": "NotCallable", "function": name, "traceback": [],
                          "message": f"{name} is a {type(fn).__name__}, not a function"}}
    request = arguments()
    try:
        return {"ok": fn(*request.args, **request.kwargs)}
    except KeyboardInterrupt:
        if interruptible:
            raise
        return _error(sys.exc_info()[1], name)  # the parent reports it as a time limit
    except BaseException as exc:
        return _error(exc, name)


def assign(namespace, name, in_dir, out_dir):
    """Bind a module-level name of the notebook to a value the parent sent (to change the data a
    function could read behind the grader's back, and see whether its answer moves)."""
    namespace[name] = wire.load(in_dir)
    _write({"ok": None}, out_dir)


def get(namespace, name, out_dir):
    """The value of a module-level name (a hyper-parameter, a count)."""
    value, answer = _lookup(namespace, name)
    _write(answer or {"ok": value}, out_dir)


def _write(answer, out_dir):
    _dump(answer, out_dir)
    sys.stdout.flush()


def _dump(answer, out_dir):
    try:
        wire.dump(answer, out_dir)
    except Exception as exc:  # the student's value could not be written
        wire.dump({"error": {"type": type(exc).__name__, "function": "",
                             "message": f"the value could not be sent to the grader: {exc}",
                             "traceback": []}}, out_dir)
