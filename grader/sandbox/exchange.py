"""Values across the sandbox boundary, read as data and never as code.

The parent writes inputs with the same format the child uses (grader.child.wire)
and reads answers here: JSON and .npy with `allow_pickle=False`, every file
opened relative to a directory descriptor held since before the child
started, without following symbolic links, and with size caps. Whatever the
child leaves in the exchange directory can at worst be a wrong answer.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from grader.child import wire

MAX_JSON_BYTES = 16 * 1024 * 1024
MAX_ARRAY_BYTES = 1024 * 1024 * 1024
_ARRAY_NAME = re.compile(r"^a\d{1,6}\.npy$")
DICT_KEY_TYPES = (str, int, float, bool, type(None))


class ExchangeError(Exception):
    """The child's answer is missing or malformed."""


def write_value(value: Any, directory: Path) -> None:
    wire.dump(value, str(directory))


def _open_regular(dir_fd: int, name: str, max_bytes: int):
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        raise ExchangeError(f"no answer file {name!r} ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ExchangeError(f"answer file {name!r} is not a regular file")
    if info.st_size > max_bytes:
        os.close(fd)
        raise ExchangeError(f"answer file {name!r} is too large ({info.st_size} bytes)")
    return os.fdopen(fd, "rb")


def read_value(exchange_fd: int, name: str) -> Any:
    """Read the answer the child left in `exchange/<name>/`."""
    try:
        dir_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=exchange_fd)
    except OSError as exc:
        raise ExchangeError(f"no answer directory ({exc.strerror})") from None
    budget = [MAX_ARRAY_BYTES]
    try:
        with _open_regular(dir_fd, "value.json", MAX_JSON_BYTES) as f:
            try:
                tree = json.loads(f.read())
            except (ValueError, UnicodeDecodeError) as exc:
                raise ExchangeError(f"the answer is not valid JSON ({exc})") from None

        def read_array(file_name: str) -> np.ndarray:
            if not isinstance(file_name, str) or not _ARRAY_NAME.match(file_name):
                raise ExchangeError(f"bad array name {file_name!r}")
            with _open_regular(dir_fd, file_name, budget[0]) as fa:
                _check_npy_header(fa, file_name, budget[0])
                try:
                    array = np.load(fa, allow_pickle=False)
                except (ValueError, OSError, EOFError, MemoryError) as exc:
                    raise ExchangeError(f"array {file_name} is not a valid .npy file ({exc})") from None
            if not isinstance(array, np.ndarray):
                raise ExchangeError(f"{file_name} is not a single array")
            budget[0] -= array.nbytes
            return array

        try:
            return _decode(tree, read_array, depth=0)
        except RecursionError:
            raise ExchangeError("the answer is nested too deeply") from None
    finally:
        os.close(dir_fd)


def _check_npy_header(f, file_name: str, budget: int) -> None:
    """Refuse an .npy file whose header promises more data than the file holds or the budget allows,
    before NumPy allocates what the header claims."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ExchangeError(f"array {file_name} uses .npy format {version}, which the grader does not read")
    except (ValueError, OSError, EOFError, TypeError, SyntaxError) as exc:
        raise ExchangeError(f"array {file_name} is not a valid .npy file ({exc})") from None
    if dtype.hasobject:
        raise ExchangeError(f"array {file_name} holds Python objects")
    nbytes = math.prod(shape) * dtype.itemsize
    data_offset = f.tell()
    size = os.fstat(f.fileno()).st_size
    if nbytes > budget or data_offset + nbytes != size:
        raise ExchangeError(f"array {file_name} claims {nbytes:,} bytes of data but holds {size - data_offset:,}")
    f.seek(0)


def _decode(node: Any, read_array, depth: int) -> Any:
    if depth > wire.MAX_DEPTH + 2:
        raise ExchangeError("the answer is nested too deeply")
    if node is None or isinstance(node, (bool, int, float)):
        return node
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise ExchangeError("malformed answer")
    if "str" in node and isinstance(node["str"], str):
        return node["str"]
    if "float" in node and node["float"] in ("nan", "inf", "-inf"):
        return float(node["float"])
    if "ndarray" in node:
        return read_array(node["ndarray"])
    if "list" in node and isinstance(node["list"], list):
        return [_decode(v, read_array, depth + 1) for v in node["list"]]
    if "tuple" in node and isinstance(node["tuple"], list):
        return tuple(_decode(v, read_array, depth + 1) for v in node["tuple"])
    if "dict" in node and isinstance(node["dict"], list):
        out = {}
        for pair in node["dict"]:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ExchangeError("malformed dict in answer")
            key = _decode(pair[0], read_array, depth + 1)
            if not isinstance(key, DICT_KEY_TYPES):
                raise ExchangeError(f"a dict in the answer has a {type(key).__name__} as a key; "
                                    "keys must be strings or numbers")
            out[key] = _decode(pair[1], read_array, depth + 1)
        return out
    if "unsupported" in node:
        return Unsupported(str(node["unsupported"])[:200], str(node.get("repr", ""))[:200])
    raise ExchangeError("malformed answer")


class Unsupported:
    """A value the child could not express as data (an object, a function)."""

    def __init__(self, type_name: str, text: str):
        self.type_name = type_name
        self.text = text

    def __repr__(self) -> str:
        return f"<{self.type_name}>"
