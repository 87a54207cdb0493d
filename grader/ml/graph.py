"""A student's model as the child described it, checked field by field. Pure: no torch.

`graph_from` turns the child's answer (grader/child/model.py) into a
`ModelGraph`: the module table, the parameters and buffers with their arrays,
the traced forward pass and the model's own probe outputs. The answer is
untrusted, so everything is validated here; a model that cannot be rebuilt
(not traced, or using an operation outside grader/child/ops.py) keeps its
module table and parameters, with `unrebuildable` saying why in words a
student can act on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.child import ops
from grader.errors import StudentError
from grader.states import StudentErrorKind

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
PATH = re.compile(r"[A-Za-z0-9_.]{0,400}")
MAX_NODES = 5_000
MAX_MODULES = 5_000
NODE_OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")


@dataclass(frozen=True)
class ModuleInfo:
    path: str
    class_name: str
    standard: str  # the torch.nn class it is (or a subclass keeping its forward); "" for a custom module
    torch_base: str  # the torch.nn class it derives from, if any (for messages)
    params: int  # its own parameters, not its children's
    has_children: bool
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    target: str
    args: Any
    kwargs: dict[str, Any]


@dataclass(frozen=True)
class ProbeAnswer:
    """The student's own model on one probe input: its outputs, or why it failed."""

    outputs: tuple[np.ndarray | None, ...] = ()
    is_tuple: bool = False
    error: str = ""


@dataclass(frozen=True)
class ModelGraph:
    class_name: str
    modules: tuple[ModuleInfo, ...]
    parameters: tuple[tuple[str, tuple[int, ...], bool], ...]  # name, shape, trainable
    buffers: tuple[tuple[str, tuple[int, ...]], ...]
    state: dict[str, np.ndarray]
    nodes: tuple[Node, ...] | None  # None when the forward could not be traced
    probes: dict[str, ProbeAnswer]
    unrebuildable: str = ""  # why the grader cannot rebuild (and so train) it; "" when it can

    @property
    def total_params(self) -> int:
        return sum(math.prod(shape) for _, shape, _ in self.parameters)

    @property
    def buffer_values_read(self) -> int:
        """Values of buffers the forward pass reads itself (outside a standard layer, whose own buffers are
        its running statistics): fixed weights all the same, which a parameter cap must count."""
        read = {n.target for n in self.nodes or () if n.op == "get_attr"}
        return sum(math.prod(shape) for name, shape in self.buffers if name in read)

    @property
    def trainable_params(self) -> int:
        return sum(math.prod(shape) for _, shape, trainable in self.parameters if trainable)

    def module(self, path: str) -> ModuleInfo | None:
        return next((m for m in self.modules if m.path == path), None)

    def to_answer(self) -> dict[str, Any]:
        """The same description in the child's format, without the arrays (they travel as files):
        what the trainer reads back with graph_from."""
        return {"class": self.class_name,
                "modules": [{"path": m.path, "class": m.class_name, "standard": m.standard,
                             "torch_base": m.torch_base, "params": m.params, "children": m.has_children,
                             **({"config": {k: _plain(v) for k, v in m.config.items()}} if m.standard else {})}
                            for m in self.modules],
                "parameters": [[n, list(s), t] for n, s, t in self.parameters],
                "buffers": [[n, list(s)] for n, s in self.buffers],
                "graph": [{"name": n.name, "op": n.op, "target": n.target, "args": encode_argument(n.args),
                           "kwargs": encode_argument(n.kwargs)} for n in self.nodes or ()]}


class Malformed(ValueError):
    pass


def graph_from(answer: dict[str, Any]) -> ModelGraph:
    """The child's description of a built module, validated. StudentError("broken") when malformed."""
    try:
        return _graph(answer)
    except (Malformed, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise StudentError(f"the grader got a malformed description of the model ({exc})",
                           kind=StudentErrorKind.BROKEN) from None


def _graph(answer: dict[str, Any]) -> ModelGraph:
    modules = tuple(_module(m) for m in _list(answer.get("modules"), MAX_MODULES))
    parameters = tuple(_tensor_entry(p, with_flag=True) for p in _list(answer.get("parameters"), 100_000))
    buffers = tuple(_tensor_entry(b, with_flag=False) for b in _list(answer.get("buffers"), 100_000))
    state = answer.get("state") or {}
    if not isinstance(state, dict):
        raise Malformed("state is not a dict")
    for name, shape, *_ in (*parameters, *buffers):
        array = state.get(name)
        if not isinstance(array, np.ndarray) or tuple(array.shape) != shape or array.dtype.kind not in "fiub":
            raise Malformed(f"no array of shape {shape} for {name}")
    probes = {str(style)[:20]: _probe(p) for style, p in (answer.get("probes") or {}).items()}
    nodes, problem = None, ""
    if isinstance(answer.get("rebuild_problem"), str):
        problem = answer["rebuild_problem"][:600]
    elif isinstance(answer.get("trace_error"), str):
        problem = (f"its forward pass could not be traced ({answer['trace_error'][:400]}). Keep forward to "
                   "torch.nn layers and torch functions applied to the input, without Python if/for on tensor "
                   "values; the course's styles (flatten inside forward, softmax output, a (logits, probs, "
                   "pred) tuple) all work")
    else:
        nodes = tuple(_node(n) for n in _list(answer.get("graph"), MAX_NODES))
        problem = _rebuild_problem(nodes, modules, {*state})
    return ModelGraph(class_name=_text(answer.get("class", "")), modules=modules, parameters=parameters,
                      buffers=buffers, state={k: v for k, v in state.items() if isinstance(k, str)},
                      nodes=nodes, probes=probes, unrebuildable=problem)


def _module(entry: Any) -> ModuleInfo:
    if not isinstance(entry, dict) or not PATH.fullmatch(str(entry.get("path", ""))):
        raise Malformed("a module entry")
    standard = entry.get("standard") or ""
    if standard and standard not in ops.MODULES:
        raise Malformed(f"unknown standard class {standard!r}")
    config = entry.get("config") or {}
    if standard:
        if not isinstance(config, dict) or set(config) != set(ops.MODULES[standard]):
            raise Malformed(f"the configuration of {entry['path']}")
        config = {k: _config_value(v) for k, v in config.items()}
    return ModuleInfo(path=entry["path"], class_name=_text(entry.get("class", "")), standard=standard,
                      torch_base=_text(entry.get("torch_base", "")), params=_count(entry.get("params")),
                      has_children=bool(entry.get("children")), config=config)


def _config_value(value: Any) -> Any:
    if value is None or isinstance(value, bool) or (isinstance(value, str) and len(value) <= 40):
        return value
    if isinstance(value, int) and abs(value) <= 10_000_000:
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, list) and len(value) <= 8:
        return tuple(_config_value(v) for v in value)
    raise Malformed(f"a configuration value {value!r:.60}")


def _tensor_entry(entry: Any, *, with_flag: bool) -> tuple:
    if not isinstance(entry, list) or len(entry) != (3 if with_flag else 2) or not PATH.fullmatch(str(entry[0])):
        raise Malformed("a parameter entry")
    shape = tuple(_count(d) for d in _list(entry[1], 8))
    return (entry[0], shape, bool(entry[2])) if with_flag else (entry[0], shape)


def _probe(entry: Any) -> ProbeAnswer:
    if not isinstance(entry, dict):
        raise Malformed("a probe")
    if "error" in entry:
        return ProbeAnswer(error=_text(entry["error"], 300))
    outputs = entry.get("outputs") or {}
    items = tuple(item if isinstance(item, np.ndarray) else None for item in _list(outputs.get("items"), 8))
    return ProbeAnswer(outputs=items, is_tuple=bool(outputs.get("tuple")))


def _node(entry: Any) -> Node:
    if not isinstance(entry, dict) or entry.get("op") not in NODE_OPS or not NAME.fullmatch(str(entry.get("name"))):
        raise Malformed("a graph node")
    target = entry.get("target")
    if not isinstance(target, str) or len(target) > 400:
        raise Malformed("a node target")
    kwargs = _decode(entry.get("kwargs") or {"map": []})
    return Node(name=entry["name"], op=entry["op"], target=target, args=_decode(entry.get("args") or {"seq": []}),
                kwargs=kwargs if isinstance(kwargs, dict) else {})


def _decode(value: Any, depth: int = 0) -> Any:
    """The child's encoding of node arguments, checked: node references, plain values, sequences."""
    if depth > 10:
        raise Malformed("arguments nested too deeply")
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value[:100]
    if not isinstance(value, dict) or len(value) != 1:
        raise Malformed("an argument")
    (kind, inner), = value.items()
    if kind == "node" and isinstance(inner, str) and NAME.fullmatch(inner):
        return NodeRef(inner)
    if kind == "seq" and isinstance(inner, list) and len(inner) <= 64:
        return tuple(_decode(v, depth + 1) for v in inner)
    if kind == "map" and isinstance(inner, list) and len(inner) <= 32:
        return {str(k)[:40]: _decode(v, depth + 1) for k, v in inner}
    if kind == "slice" and isinstance(inner, list) and len(inner) == 3:
        return SliceArg(*(_decode(v, depth + 1) for v in inner))
    if kind == "float" and inner in ("nan", "inf", "-inf"):
        return float(inner)
    if kind == "ellipsis":
        return Ellipsis
    if kind == "dtype" and inner in ("float32", "float64", "int64", "long", "float", "bool", "int32"):
        return DtypeArg(inner)
    raise Malformed(f"an argument of kind {kind!r}")


@dataclass(frozen=True)
class NodeRef:
    name: str


@dataclass(frozen=True)
class SliceArg:
    start: Any
    stop: Any
    step: Any


@dataclass(frozen=True)
class DtypeArg:
    name: str


def _rebuild_problem(nodes: tuple[Node, ...], modules: tuple[ModuleInfo, ...], state: set[str]) -> str:
    """Why these nodes cannot be rebuilt from standard torch ("" when they can)."""
    by_path = {m.path: m for m in modules}
    seen: set[str] = set()
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1 or not nodes or nodes[-1].op != "output":
        return "its forward must take exactly one input (the batch) and return a value"
    for node in nodes:
        for ref in _refs(node.args) + _refs(node.kwargs):
            if ref not in seen:
                raise Malformed(f"node {node.name} uses {ref} before it exists")
        if node.name in seen:
            raise Malformed(f"two nodes named {node.name}")
        seen.add(node.name)
        if node.op == "call_module":
            module = by_path.get(node.target)
            if module is None or not module.standard:
                kind = module.class_name if module else node.target
                return f"forward calls the module {node.target} ({kind}), which the grader cannot rebuild"
        elif node.op == "call_function" and node.target not in ops.FUNCTIONS:
            return f"forward calls {node.target}, which the grader cannot rebuild"
        elif node.op == "call_method" and node.target not in ops.METHODS:
            return f"forward calls the tensor method .{node.target}(), which the grader cannot rebuild"
        elif node.op == "get_attr" and node.target not in state:
            return f"forward reads {node.target}, which is not one of the model's parameters or buffers"
        if node.target == "builtins.getattr" and (len(node.args) != 2 or node.args[1] not in ops.ATTRIBUTES):
            return f"forward reads the attribute {node.args[1:2]!r} of a tensor, which the grader cannot rebuild"
    return ""


def encode_argument(value: Any) -> Any:
    """The inverse of _decode."""
    if isinstance(value, NodeRef):
        return {"node": value.name}
    if isinstance(value, tuple):
        return {"seq": [encode_argument(v) for v in value]}
    if isinstance(value, dict):
        return {"map": [[k, encode_argument(v)] for k, v in value.items()]}
    if isinstance(value, SliceArg):
        return {"slice": [encode_argument(v) for v in (value.start, value.stop, value.step)]}
    if isinstance(value, DtypeArg):
        return {"dtype": value.name}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    return value


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


def _refs(value: Any) -> list[str]:
    if isinstance(value, NodeRef):
        return [value.name]
    if isinstance(value, (tuple, list)):
        return [r for v in value for r in _refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, SliceArg):
        return _refs((value.start, value.stop, value.step))
    return []


def _list(value: Any, limit: int) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or len(value) > limit:
        raise Malformed("a list")
    return list(value)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10 ** 12:
        raise Malformed(f"a count {value!r:.30}")
    return value


def _text(value: Any, limit: int = 100) -> str:
    return str(value)[:limit]


# --------------------------------------------------------------------------
# A chain of standard layers: what assignments with architecture rules train


_SHAPE_READERS = ("size",)  # tensor methods that give a shape, not a tensor
_SHAPE_ATTRIBUTES = ("shape", "ndim")


def chain_problem(graph: ModelGraph) -> str:
    """Why the traced forward pass is not a chain of standard layers from the input to the output ("" when it
    is): every step takes one value computed from the input (and shapes or plain numbers) and gives one on,
    and parameters and buffers are used only inside their own standard layer. Two values combined (a
    product of two input columns, a branch added back, a gate), or a tensor read directly (a free parameter,
    a buffer, a table of numbers), are a computation the grader would not be training, whatever it computes."""
    kinds: dict[str, str] = {}  # node name -> "input" (a tensor computed from the input) | "shape"
    for node in graph.nodes or ():
        refs = _refs(node.args) + _refs(node.kwargs)
        tensors = list(dict.fromkeys(r for r in refs if kinds.get(r) == "input"))
        if node.op == "placeholder":
            kinds[node.name] = "input"
        elif node.op == "output":
            continue  # several results of the chain (logits, probabilities, prediction) may be returned
        elif node.op == "get_attr":
            return (f"forward reads the tensor {node.target} directly, outside a standard layer; this assignment's "
                    "model must use its weights only inside standard layers (nn.Linear, nn.Conv2d, ...)")
        elif len(tensors) > 1:
            return (f"forward combines {len(tensors)} values computed from the input ({_what(node)} of "
                    f"{', '.join(tensors[:3])}); this assignment's model must be a chain of standard layers and "
                    "activations from the input to the output, without branches, products or gates")
        elif node.op == "call_module":
            if not tensors:
                return (f"the layer {node.target} is applied to something not computed from the input; this "
                        "assignment's model must be a chain of standard layers from the input to the output")
            kinds[node.name] = "input"
        elif (node.op == "call_method" and node.target in _SHAPE_READERS) or (
                node.target == "builtins.getattr" and len(node.args) == 2 and node.args[1] in _SHAPE_ATTRIBUTES):
            kinds[node.name] = "shape"
        else:
            kinds[node.name] = "input" if tensors else "shape"
    return ""


def _what(node: Node) -> str:
    return node.target if node.op != "call_method" else f".{node.target}()"
