"""Values as JSON plus pickle-free .npy files: the only format that crosses the sandbox.

A value becomes `value.json`, a tree of JSON nodes, with every array stored
beside it as `a<N>.npy`. Both sides use `dump`; the parent reads with its own
hardened reader (grader.sandbox.exchange), never with `load` below.
"""

import json
import math
import os

import numpy as np

MAX_DEPTH = 20
MAX_ITEMS = 100_000
MAX_STRING = 10_000


class _Writer:
    def __init__(self, directory):
        self.directory = directory
        self.arrays = 0
        self.items = 0

    def node(self, value, depth=0):
        self.items += 1
        if depth > MAX_DEPTH or self.items > MAX_ITEMS:
            return {"unsupported": "too deeply nested or too large", "repr": ""}
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value if abs(value) < 2**63 else float(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else {"float": repr(value)}
        if isinstance(value, str):
            return {"str": value[:MAX_STRING]}
        if isinstance(value, np.generic):
            return self.array(np.asarray(value), "numpy")
        if isinstance(value, np.ndarray):
            return self.array(value, "numpy")
        if _is_tensor(value):
            return self.array(value.detach().cpu().numpy(), "torch")
        if isinstance(value, (list, tuple)):
            kind = "tuple" if isinstance(value, tuple) else "list"
            return {kind: [self.node(v, depth + 1) for v in value]}
        if isinstance(value, dict):
            return {"dict": [[self.node(k, depth + 1), self.node(v, depth + 1)] for k, v in value.items()]}
        return {"unsupported": type(value).__name__, "repr": _safe_repr(value)}

    def array(self, array, source):
        if array.dtype == object or array.dtype.fields is not None:
            return {"unsupported": f"array of {array.dtype}", "repr": ""}
        name = f"a{self.arrays}.npy"
        self.arrays += 1
        # np.ascontiguousarray would make a 0-d array 1-d: a scalar must come back as shape ()
        contiguous = array if array.flags.c_contiguous else array.copy(order="C")
        np.save(os.path.join(self.directory, name), contiguous, allow_pickle=False)
        return {"ndarray": name, "source": source}


def _is_tensor(value):
    return type(value).__module__.startswith("torch") and hasattr(value, "detach") and hasattr(value, "numpy")


def _safe_repr(value):
    try:
        return repr(value)[:200]
    except Exception:
        return "<unrepresentable>"


def dump(value, directory):
    """Write `value` into `directory` (which must exist)."""
    tree = _Writer(directory).node(value)
    tmp = os.path.join(directory, "value.json.tmp")
    with open(tmp, "w") as f:
        json.dump(tree, f)
    os.replace(tmp, os.path.join(directory, "value.json"))


def load(directory):
    """The child's reader for what the parent sent (the parent is trusted)."""
    with open(os.path.join(directory, "value.json")) as f:
        tree = json.load(f)
    return _decode(tree, lambda name: np.load(os.path.join(directory, name), allow_pickle=False))


def _decode(node, read_array):
    if node is None or isinstance(node, (bool, int, float)):
        return node
    if "str" in node:
        return node["str"]
    if "float" in node:
        return float(node["float"])
    if "ndarray" in node:
        return read_array(node["ndarray"])
    if "list" in node:
        return [_decode(v, read_array) for v in node["list"]]
    if "tuple" in node:
        return tuple(_decode(v, read_array) for v in node["tuple"])
    if "dict" in node:
        return {_decode(k, read_array): _decode(v, read_array) for k, v in node["dict"]}
    raise ValueError(f"unknown node {sorted(node)}")
