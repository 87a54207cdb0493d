"""A file a student's save_model wrote, opened in a process that never ran student code.

    python -m grader.ml.state_file FILE OUT_DIR

The grader's own process never unpickles what student code wrote (a pickle can
run code when it is loaded), and the kernel cannot be trusted to report what
the file holds (a notebook can patch whatever runs there). So the grader copies
the file out of the exchange (no link followed, size capped) and starts this
module on the copy: `torch.load(weights_only=True)` and nothing else, and what
it holds goes back as plain data in the exchange format (grader/child/wire.py):
whether it opened and why not, the kind of object, and for a dict every entry's
key, shape, dtype and values. The grader compares them with the model's state
in its own process.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.errors import GraderFailure
from grader.sandbox.exchange import ExchangeError, read_value
from grader.sandbox.trusted import Stalled, finish_trusted, start_trusted

MAX_FILE_BYTES = 256 << 20  # a course model's state_dict is a few MB
MAX_ENTRIES = 1000
INSPECT_STALL_S = 120.0
NO_FILE = "no file at that path"


@dataclass(frozen=True)
class SavedFile:
    """What the grader found at the path save_model was given."""

    exists: bool
    opened: bool = False  # torch.load(weights_only=True) took it
    error: str = ""  # why it is absent or could not be opened
    kind: str = ""  # the type of what it holds
    # a dict's: key, shape, dtype, values
    entries: tuple[tuple[str, tuple[int, ...] | None, str, Any], ...] | None = None
    # every tensor in it, in dicts within dicts too, by its dotted path ("state_dict.0.weight")
    tensors: tuple[tuple[str, tuple[int, ...] | None, str, Any], ...] = ()


def read_saved_file(exchange_fd: int, relative: str, *, memory_mb: int | None) -> SavedFile:
    """The file at exchange/`relative`, opened as the module docstring says."""
    with tempfile.TemporaryDirectory(prefix="grader-saved-") as private:
        copy = Path(private) / "model.pt"
        problem = _copy_out(exchange_fd, relative, copy)
        if problem:
            return SavedFile(exists=False, error=problem)
        out = Path(private) / "out"
        out.mkdir()
        process = start_trusted([sys.executable, "-m", "grader.ml.state_file", str(copy), str(out)],
                                memory_mb=memory_mb, threads=1)
        try:
            done = finish_trusted(process, stall_s=INSPECT_STALL_S)
        except Stalled as exc:
            raise GraderFailure(f"the process that opens the saved file was stopped ({exc})") from None
        return _answer(private, done)


def _copy_out(exchange_fd: int, relative: str, target: Path) -> str:
    """Copy a regular file from the exchange without following links; why not, or ""."""
    parts = [p for p in relative.split("/") if p]
    fd = exchange_fd
    opened: list[int] = []
    try:
        for part in parts[:-1]:
            fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            opened.append(fd)
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except FileNotFoundError:
            return NO_FILE
        except OSError as exc:
            return f"it is not a file the grader opens ({exc.strerror})"
        opened.append(fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return "it is not a regular file"
        if info.st_size > MAX_FILE_BYTES:
            return f"it holds {info.st_size:,} bytes; the grader opens at most {MAX_FILE_BYTES:,}"
        with os.fdopen(os.dup(fd), "rb") as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
        return ""
    finally:
        for descriptor in opened:
            os.close(descriptor)


def _answer(private: str, done) -> SavedFile:
    fd = os.open(private, os.O_RDONLY | os.O_DIRECTORY)
    try:
        answer = read_value(fd, "out")
    except ExchangeError:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])[:300]
        raise GraderFailure(f"the process that opens the saved file failed (exit status {done.returncode}"
                            + (f": {tail}" if tail else "") + ")") from None
    finally:
        os.close(fd)
    if not isinstance(answer, dict) or not isinstance(answer.get("opened"), bool):
        raise GraderFailure("the process that opens the saved file gave no record")
    if not answer["opened"]:
        return SavedFile(exists=True, error=str(answer.get("error", ""))[:400])
    entries, tensors = answer.get("entries"), answer.get("tensors")
    return SavedFile(exists=True, opened=True, kind=str(answer.get("kind", ""))[:80],
                     entries=tuple(tuple(e) for e in entries) if isinstance(entries, list) else None,
                     tensors=tuple(tuple(e) for e in tensors) if isinstance(tensors, list) else ())


# --------------------------------------------------------------------------
# The trusted process


def inspect(path: str) -> dict[str, Any]:
    import torch

    try:
        held = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # why it cannot be opened safely is the answer
        return {"opened": False, "error": _why(exc)}
    answer: dict[str, Any] = {"opened": True, "kind": type(held).__name__}
    if isinstance(held, dict):
        answer["entries"] = [_entry(key, value, torch) for key, value in list(held.items())[:MAX_ENTRIES]]
        answer["tensors"] = [_entry(path, value, torch) for path, value in _tensors(held, "", torch)][:MAX_ENTRIES]
    return answer


def _tensors(mapping: dict, prefix: str, torch: Any, depth: int = 0):
    """(dotted path, tensor) for every tensor in `mapping` and the dicts it holds, three levels deep."""
    for key, value in list(mapping.items())[:MAX_ENTRIES]:
        path = f"{prefix}{key}"
        if torch.is_tensor(value):
            yield path, value
        elif isinstance(value, dict) and depth < 3:
            yield from _tensors(value, f"{path}.", torch, depth + 1)


def _entry(key: Any, value: Any, torch: Any) -> list:
    if not torch.is_tensor(value):
        return [str(key), None, type(value).__name__, None]
    numeric = value.dtype.is_floating_point or not (value.dtype.is_complex or value.dtype == torch.bool)
    values = value.detach().to(torch.float64).numpy() if numeric else None
    return [str(key), list(value.shape), str(value.dtype).replace("torch.", ""), values]


def _why(exc: Exception) -> str:
    text = str(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return f"it holds a pickled {unsupported.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:300] if lines else ''}"


def main(argv: list[str]) -> int:
    from grader.child import wire

    wire.dump(inspect(argv[1]), argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
