"""A student's model rebuilt from its description, with standard torch only.

`Rebuilt` holds a fresh torch.nn module for every standard layer the traced
forward pass calls, loaded with the student's parameter values, and the
parameters that custom code reads (get_attr). Its forward interprets the
traced nodes one by one, through the functions of grader/child/ops.py. No
code of the student's runs here: whatever the notebook's model did besides
these operations (a second predictor, hooks, training itself) is not part of
what the grader trains and scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from grader.child import ops
from grader.ml.graph import DtypeArg, ModelGraph, Node, NodeRef, SliceArg

DTYPES = {"float32": torch.float32, "float": torch.float32, "float64": torch.float64, "int64": torch.int64,
          "long": torch.int64, "int32": torch.int32, "bool": torch.bool}


class RebuildError(Exception):
    """The description does not make a model (inconsistent shapes, shared parameters)."""


def _key(name: str) -> str:
    return name.replace(".", "__")


class Rebuilt(torch.nn.Module):
    def __init__(self, graph: ModelGraph):
        super().__init__()
        if graph.unrebuildable or graph.nodes is None:
            raise RebuildError(graph.unrebuildable or "the model was not traced")
        self._nodes: tuple[Node, ...] = graph.nodes
        self._functions = ops.function_table()
        trainable = {name: flag for name, _, flag in graph.parameters}
        self.layers = torch.nn.ModuleDict()
        used = {node.target for node in graph.nodes if node.op == "call_module"}
        owned: set[str] = set()
        for info in graph.modules:
            if info.path not in used:
                continue
            layer = getattr(torch.nn, info.standard)(**dict(info.config))
            for kind, holder in (("_parameters", trainable), ("_buffers", None)):
                for name, tensor in list(getattr(layer, kind).items()):
                    if tensor is None:
                        continue
                    full = f"{info.path}.{name}" if info.path else name
                    _load(tensor, graph.state.get(full), full)
                    if holder is not None:
                        tensor.requires_grad_(holder.get(full, True))
                    owned.add(full)
            self.layers[_key(info.path)] = layer
        self.free = torch.nn.ParameterDict()
        for node in graph.nodes:
            if node.op == "get_attr" and node.target not in owned and _key(node.target) not in self.free:
                value = torch.from_numpy(np.array(graph.state[node.target]))
                if node.target in trainable:
                    self.free[_key(node.target)] = torch.nn.Parameter(value.float(),
                                                                      requires_grad=trainable[node.target])
                else:
                    self.register_buffer(f"buffer__{_key(node.target)}", value)

    def forward(self, x: torch.Tensor, record: Callable[[str, Any], None] | None = None) -> Any:
        env: dict[str, Any] = {}

        def value(arg: Any) -> Any:
            if isinstance(arg, NodeRef):
                return env[arg.name]
            if isinstance(arg, tuple):
                return tuple(value(a) for a in arg)
            if isinstance(arg, dict):
                return {k: value(v) for k, v in arg.items()}
            if isinstance(arg, SliceArg):
                return slice(value(arg.start), value(arg.stop), value(arg.step))
            if isinstance(arg, DtypeArg):
                return DTYPES[arg.name]
            return arg

        for node in self._nodes:
            args, kwargs = value(node.args), value(node.kwargs)
            if node.op == "placeholder":
                result = x
            elif node.op == "get_attr":
                key = _key(node.target)
                result = self.free[key] if key in self.free else getattr(self, f"buffer__{key}")
            elif node.op == "call_module":
                result = self.layers[_key(node.target)](*args, **kwargs)
            elif node.op == "call_function":
                if node.target == "F.dropout":  # traced with the student's training flag of that moment
                    kwargs = {**kwargs, "training": self.training}
                    args = args[:2]
                result = self._functions[node.target](*args, **kwargs)
            elif node.op == "call_method":
                result = getattr(args[0], node.target)(*args[1:], **kwargs)
            else:  # output
                return args[0]
            env[node.name] = result
            if record is not None:
                record(node.name, result)
        raise RebuildError("the traced forward pass has no output")


def _load(tensor: torch.Tensor, array: np.ndarray | None, name: str) -> None:
    if array is None:
        raise RebuildError(f"{name} has no values of its own (are parameters shared between layers?)")
    if tuple(array.shape) != tuple(tensor.shape):
        raise RebuildError(f"{name} has shape {tuple(array.shape)}, but its layer needs {tuple(tensor.shape)}")
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(np.ascontiguousarray(array)).to(tensor.dtype))


def rebuild(graph: ModelGraph) -> Rebuilt:
    """The rebuilt model, or RebuildError with a reason a student can act on."""
    try:
        return Rebuilt(graph)
    except RebuildError:
        raise
    except Exception as exc:  # a configuration torch refuses
        raise RebuildError(f"its layers cannot be made again ({type(exc).__name__}: {exc})"[:400]) from None
