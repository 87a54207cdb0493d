"""Build the student's model once and describe it as data. Runs in the child.

The grader never trains or scores the object a notebook built: it rebuilds the
model from this description (grader/ml/rebuild.py), from standard torch only,
in a process that never ran student code. What goes back is plain data:

- the modules (class, whether it is a standard torch.nn class, its constructor
  arguments, its own parameter count);
- every parameter and buffer as an array, read from torch's own `_parameters`
  and `_buffers` dicts (an overridden `parameters()` is never called);
- the forward pass traced by torch.fx, node by node, with the functions named
  from ops.py; a standard layer class is a leaf, anything else (a subclass
  that overrides forward included) is traced through, so its real operations
  show;
- the model's own outputs, in evaluation mode, on the probe inputs the grader
  sent, for each input shape the grader may feed: the grader compares them
  with its rebuild's, so a forward that does something its parts do not
  (a second predictor, a hook, a changing state) earns no accuracy credit.

Every assignment that may use torch imports this module before the student's
first cell (Assignment.child_helpers), so the torch classes and functions
captured below are the real ones.
"""

import math
import random

import numpy as np
import torch
import torch.fx

from . import ops, protocol, wire
from .probe import _defined, _error, _write

_MODULE = torch.nn.Module
_TRACER = torch.fx.Tracer
_NN = torch.nn
_TORCH_NN_CLASSES = frozenset(obj for obj in vars(torch.nn).values() if isinstance(obj, type))
_STANDARD = {getattr(torch.nn, name): name for name in ops.MODULES}
_FUNCTION_NAMES = {id(fn): name for name, fn in ops.function_table().items()}
_PARAMETER = torch.nn.Parameter


class TraceProblem(Exception):
    """The forward pass cannot be described with the operations the grader rebuilds."""


def trace(namespace, in_dir, out_dir):
    request = protocol.from_wire(protocol.Trace, wire.load(in_dir))
    try:
        answer = {"ok": _describe(namespace, request)}
    except BaseException as exc:  # the student's errors are the answer
        answer = _error(exc, request.factory)
    _write(answer, out_dir)


# --------------------------------------------------------------------------
# Building


def _count_on_meta(factory, args):
    """Parameters the model would have, without allocating them (None if unknown)."""
    try:
        with torch.device("meta"):
            model = factory(*args)
        return sum(p.numel() for p in _parameters(model).values()) if isinstance(model, _MODULE) else None
    except Exception:  # the real build will raise it properly
        return None


def _seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _describe(namespace, request):
    factory = _defined(namespace, request.factory)
    args = list(request.args)
    planned = _count_on_meta(factory, args)
    if planned is not None and planned > request.max_params:
        return {"refused": True, "planned_params": planned}
    _seed(request.seed)
    model = factory(*args)
    if not isinstance(model, _MODULE):
        return {"is_module": False, "type": type(model).__name__}
    facts = {"is_module": True, "class": type(model).__name__, "modules": _modules(model)}
    parameters, buffers = _parameters(model), _buffers(model)
    facts["parameters"] = [[name, list(p.shape), bool(p.requires_grad)] for name, p in parameters.items()]
    facts["buffers"] = [[name, list(b.shape)] for name, b in buffers.items()]
    if sum(p.numel() for p in parameters.values()) > request.max_params:
        return {**facts, "refused": True, "planned_params": sum(p.numel() for p in parameters.values())}
    facts["state"] = {name: tensor.detach().cpu().float().numpy() if tensor.is_floating_point()
                      else tensor.detach().cpu().numpy() for name, tensor in {**parameters, **buffers}.items()}
    try:
        facts["graph"] = _graph(model)
    except TraceProblem as exc:
        facts["rebuild_problem"] = str(exc)[:600]
    except Exception as exc:  # torch.fx or student code: say which, in words
        facts["trace_error"] = f"{type(exc).__name__}: {exc}"[:600]
    facts["probes"] = _probes(model, request.probes)
    return facts


# --------------------------------------------------------------------------
# Modules, parameters, buffers: read from torch's own dicts


def _walk(model):
    """(path, module) for the model and every submodule, from the `_modules` dicts that torch's own
    forward and optimizers use: an overridden named_modules() is not called."""
    found, seen, queue = [], set(), [("", model)]
    while queue:
        path, module = queue.pop(0)
        if id(module) in seen:
            continue
        seen.add(id(module))
        found.append((path, module))
        children = vars(module).get("_modules") or {}
        queue.extend((f"{path}.{key}" if path else key, child) for key, child in children.items()
                     if child is not None)
    return found


def _own(module, kind):
    return {name: t for name, t in (vars(module).get(kind) or {}).items() if t is not None}


def _collect(model, kind):
    found, seen = {}, set()
    for path, module in _walk(model):
        for name, tensor in _own(module, kind).items():
            if id(tensor) not in seen:  # a tied tensor is one tensor
                seen.add(id(tensor))
                found[f"{path}.{name}" if path else name] = tensor
    return found


def _parameters(model):
    return _collect(model, "_parameters")


def _buffers(model):
    return _collect(model, "_buffers")


def _standard_class(module):
    """The torch.nn class a module behaves as, or None: its own class, or a subclass that keeps
    that class's forward. A subclass that overrides forward is a custom layer."""
    for cls in type(module).__mro__:
        if cls in _STANDARD:
            return _STANDARD[cls] if type(module).forward is cls.forward else None
    return None


def _config(module, name):
    config = {}
    for attr in ops.MODULES[name]:
        value = getattr(module, attr, None)
        if attr in ops.FLAG_FROM_PARAMETER and not isinstance(value, bool):
            value = value is not None
        config[attr] = _plain(value)
    return config


def _modules(model):
    table = []
    for path, module in _walk(model):
        standard = _standard_class(module)
        torch_base = next((cls.__name__ for cls in type(module).__mro__
                           if cls in _TORCH_NN_CLASSES and cls is not _MODULE), "")
        entry = {"path": path, "class": type(module).__name__, "standard": standard or "",
                 "torch_base": torch_base, "params": sum(t.numel() for t in _own(module, "_parameters").values()),
                 "children": bool(vars(module).get("_modules"))}
        if standard:
            entry["config"] = _config(module, standard)
        table.append(entry)
    return table


def _plain(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list, torch.Size)):
        return [_plain(v) for v in value]
    return repr(value)[:100]


# --------------------------------------------------------------------------
# The forward pass as a graph


_NOTHING = object()
_LEN = len


def _traced_len(value):
    return value.size(0) if isinstance(value, torch.fx.Proxy) else _LEN(value)


class _Tracer(_TRACER):
    """torch.fx's tracer, finding modules and parameters by torch's own dicts (as _walk does), so that
    a model overriding named_modules() or named_parameters() cannot misname them."""

    def trace(self, root, concrete_args=None):
        self._paths = {id(module): path for path, module in _walk(root)}
        self._tensors = {id(t): name for name, t in {**_parameters(root), **_buffers(root)}.items()}
        self._attribute_proxies = {}
        # len(x) on the batch is common in forward; torch.fx refuses it, so the notebook's own code sees,
        # while tracing, a len that gives x.size(0) for a traced tensor (and the real len otherwise)
        namespaces = {id(g): g for g in (getattr(type(m).forward, "__globals__", None) for _, m in _walk(root))
                      if g is not None and not g.get("__name__", "").startswith("torch")}
        saved = {key: g.get("len", _NOTHING) for key, g in namespaces.items()}
        for g in namespaces.values():
            g["len"] = _traced_len
        try:
            return super().trace(root, concrete_args)
        finally:
            for key, g in namespaces.items():
                if saved[key] is _NOTHING:
                    g.pop("len", None)
                else:
                    g["len"] = saved[key]

    def is_leaf_module(self, module, qualified_name):
        return _standard_class(module) is not None

    def path_of_module(self, module):
        if id(module) not in self._paths:
            raise NameError("forward calls a module that is not part of the model")
        return self._paths[id(module)]

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        name = self._tensors.get(id(attr_val)) if isinstance(attr_val, torch.Tensor) else None
        if name is None:
            return attr_val
        if name not in self._attribute_proxies:
            self._attribute_proxies[name] = self.create_proxy("get_attr", name, (), {})
        return self._attribute_proxies[name]


def _graph(model):
    graph = _Tracer().trace(model)
    nodes = []
    for node in graph.nodes:
        nodes.append({"name": node.name, "op": node.op, "target": _target(node),
                      "args": _encode(node.args), "kwargs": _encode(dict(node.kwargs))})
    return nodes


def _target(node):
    if node.op == "call_function":
        name = _FUNCTION_NAMES.get(id(node.target))
        if name is None:
            module = getattr(node.target, "__module__", "") or ""
            raise TraceProblem(f"forward calls {module}.{getattr(node.target, '__name__', node.target)}, which the "
                               "grader cannot rebuild: use torch.nn layers and torch functions")
        return name
    return str(node.target)


def _encode(value):
    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (tuple, list, torch.Size)):
        return {"seq": [_encode(v) for v in value]}
    if isinstance(value, dict):
        return {"map": [[k, _encode(v)] for k, v in value.items() if isinstance(k, str)]}
    if isinstance(value, slice):
        return {"slice": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).replace("torch.", "")}
    raise TraceProblem(f"forward uses a {type(value).__name__} value, which the grader cannot rebuild")


# --------------------------------------------------------------------------
# The model's own outputs on the grader's probe inputs


def _probes(model, probes):
    found = {}
    was_training = model.training
    model.eval()
    try:
        for style, array in probes.items():
            x = torch.from_numpy(np.ascontiguousarray(array)).float()
            try:
                with torch.no_grad():
                    output = model(x)
                found[style] = {"outputs": _outputs(output)}
            except Exception as exc:  # this input shape does not suit the model
                found[style] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        model.train(was_training)
    return found


def _outputs(output):
    items = list(output) if isinstance(output, (tuple, list)) else [output]
    arrays = []
    for item in items[:8]:
        if isinstance(item, torch.Tensor):
            tensor = item.detach().cpu()
            arrays.append(tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy())
        else:
            arrays.append(None)
    return {"tuple": isinstance(output, (tuple, list)), "items": arrays}
