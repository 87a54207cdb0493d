"""Inspect and train the student's model under the grader's budget. Runs in the child.

The parent decides everything (budget, seed, data, how to read the output)
and computes every score from what comes back: the child never sees test
labels, so what it returns about the test set is raw model outputs only.

Every assignment that may use torch imports this module before the student's
first cell (Assignment.child_helpers), so the torch originals captured below are the
real ones: a notebook that renames a class (`class Linear(nn.Conv2d)`),
rebinds `torch.relu`, or overrides `parameters()` on its model cannot change
what this module reports.
"""

import math
import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import wire
from .probe import Missing, _error, _write

_MODULE = torch.nn.Module
_LINEAR = torch.nn.Linear
_TORCH_NN_CLASSES = frozenset(obj for obj in vars(torch.nn).values() if isinstance(obj, type))
_register_forward_hook = torch.nn.Module.register_forward_hook
# What may join two layers, or a regressor's last Linear layer to its output; tried in this order.
_FUNCTIONS = {
    "identity": lambda t: t, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
    "softmax": lambda t: F.softmax(t, dim=-1), "log-softmax": lambda t: F.log_softmax(t, dim=-1),
    "hardtanh": F.hardtanh, "relu6": F.relu6, "hardsigmoid": F.hardsigmoid, "softplus": F.softplus,
    "elu": F.elu, "leaky-relu": F.leaky_relu, "gelu": F.gelu, "silu": F.silu,
}
_softmax = F.softmax
EXTREME_SCALES = (1.0, 10.0, 100.0, 1000.0, -1000.0)


def inspect(namespace, in_dir, out_dir):
    """Build the model and describe it: layers, parameters, input and output style."""
    spec = wire.load(in_dir)
    try:
        answer = {"ok": _inspect(namespace, spec)}
    except BaseException as exc:  # noqa: BLE001 - the student's errors are the answer
        answer = _error(exc, spec["factory"])
    _write(answer, out_dir)


def train(namespace, in_dir, out_dir):
    """Train a fresh model with the parent's budget; return history and raw test outputs."""
    spec = wire.load(in_dir)
    try:
        answer = {"ok": _train(namespace, spec)}
    except BaseException as exc:  # noqa: BLE001
        answer = _error(exc, spec["factory"])
    _write(answer, out_dir)


# --------------------------------------------------------------------------
# Building


def _factory(namespace, name):
    if name not in namespace:
        raise Missing(f"{name} is not defined")
    return namespace[name]


def _count_on_meta(factory, args):
    """Parameters the model would have, without allocating them (None if unknown)."""
    try:
        with torch.device("meta"):
            model = factory(*args)
        return _count(model) if isinstance(model, _MODULE) else None
    except Exception:  # noqa: BLE001 - the real build will raise it properly
        return None


def _build(namespace, spec):
    factory = _factory(namespace, spec["factory"])
    args = spec.get("args", [])
    planned = _count_on_meta(factory, args)
    if planned is not None and planned > spec["max_params"]:
        return None, {"refused": True, "planned_params": planned}
    _seed(spec["seed"], spec.get("device", "cpu"))
    model = factory(*args)
    if not isinstance(model, _MODULE):
        return None, {"is_module": False, "type": type(model).__name__}
    return model, {"is_module": True}


def _seed(seed, device):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device != "cpu":
        # GPU kernels may use atomics; on the CPU these models are deterministic already, and
        # this call costs a second there (it loads the CUDA libraries).
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


# --------------------------------------------------------------------------
# Inspecting


def _inspect(namespace, spec):
    model, facts = _build(namespace, spec)
    if model is None:
        return facts
    facts.update(_describe(model))
    sample = np.load(spec["sample"], allow_pickle=False)
    facts.update(_forward_style(model, sample, spec))
    if facts.get("input_style"):
        facts.update(_linear_path(model, _shape(sample, facts["input_style"], spec)))
        if spec.get("task") == "regression":
            facts.update(_output_head(model, _extreme_inputs(sample, spec["seed"]), facts["tuple_index"]))
    facts["trainable_params"] = sum(p.numel() for p in _parameters(model) if p.requires_grad)
    return facts  # inspected on the CPU: training builds a fresh model on the grader's device


def _walk(model):
    """(name, module) for the model and every submodule, read from the `_modules` dicts that torch's
    own forward and optimizers use: a model's overridden named_modules() or parameters() is not called."""
    found, seen, queue = [], set(), [("", model)]
    while queue:
        name, module = queue.pop(0)
        if id(module) in seen:
            continue
        seen.add(id(module))
        found.append((name, module))
        children = vars(module).get("_modules") or {}
        queue.extend((f"{name}.{key}" if name else key, child) for key, child in children.items() if child is not None)
    return found


def _own_parameters(module):
    return [p for p in (vars(module).get("_parameters") or {}).values() if p is not None]


def _parameters(model):
    """Every parameter once, the way _walk finds the modules."""
    unique = {}
    for _, module in _walk(model):
        for parameter in _own_parameters(module):
            unique.setdefault(id(parameter), parameter)
    return list(unique.values())


def _count(model):
    return sum(p.numel() for p in _parameters(model))


def _torch_class(module):
    """The torch.nn class a module is, by identity, not by name: a renamed Conv2d stays a Conv2d."""
    return next((cls for cls in type(module).__mro__ if cls in _TORCH_NN_CLASSES and cls is not _MODULE), None)


def _leaves(model):
    return [(name, module) for name, module in _walk(model) if not vars(module).get("_modules")]


def _describe(model):
    layers = []
    for name, module in _leaves(model):
        torch_class = _torch_class(module)
        layer = {"name": name or type(model).__name__,
                 "type": torch_class.__name__ if torch_class else type(module).__name__,
                 "module": "torch.nn" if torch_class else "notebook",
                 "params": sum(p.numel() for p in _own_parameters(module))}
        for attr in ("in_features", "out_features", "in_channels", "out_channels"):
            if isinstance(getattr(module, attr, None), int):
                layer[attr] = getattr(module, attr)
        layers.append(layer)
    return {"class": type(model).__name__, "layers": layers, "total_params": _count(model)}


def _shape(array, style, spec):
    """Model inputs: uint8 images scaled to [0, 1] (as ToTensor does) in the detected shape;
    float features as they are."""

    x = torch.from_numpy(np.ascontiguousarray(array))
    if x.dtype != torch.uint8:
        return x.float()
    x = x.float().div_(255.0)
    if style == "flat":
        return x.reshape(len(x), -1)
    return x.reshape(len(x), 1, *x.shape[1:])


def _scores(output, batch, n_outputs, flat_ok=False):
    """The (batch, n_outputs) float tensor in the model's output, and where it was.
    With flat_ok (one regression output), shape (batch,) is accepted too."""

    if isinstance(output, torch.Tensor):
        candidates = [(None, output)]
    elif isinstance(output, (tuple, list)):
        candidates = list(enumerate(output))
    else:
        raise TypeError(f"forward returned a {type(output).__name__}, not a tensor")
    shapes = [(batch, n_outputs)] + ([(batch,)] if flat_ok and n_outputs == 1 else [])
    for index, item in candidates:
        if isinstance(item, torch.Tensor) and item.is_floating_point() and tuple(item.shape) in shapes:
            return index, item
    shapes = [tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__ for _, item in candidates]
    raise ValueError(f"forward returned {shapes[0] if len(shapes) == 1 else shapes}, "
                     f"expected shape ({batch}, {n_outputs})")


def _output_kind(scores):
    if torch.all(scores >= 0) and torch.allclose(scores.sum(dim=1), torch.ones(len(scores)), atol=1e-4):
        return "probabilities"
    if torch.all(scores <= 0) and torch.allclose(torch.logsumexp(scores, dim=1), torch.zeros(len(scores)),
                                                  atol=1e-4):
        return "log-probabilities"
    return "logits"


def _forward_style(model, sample, spec):
    """Which input shape the model takes and what its output is, tried on a few images."""
    n_outputs = spec["n_outputs"]
    regression = spec.get("task") == "regression"
    styles = ["flat"] if regression else ["image", "flat"]
    problems = {}
    model.eval()
    for style in styles:
        x = _shape(sample, style, spec)
        try:
            with torch.no_grad():
                output = model(x)
            index, scores = _scores(output, len(x), n_outputs, flat_ok=regression)
        except Exception as exc:  # noqa: BLE001 - try the next style
            problems[style] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        tuple_length = len(output) if isinstance(output, (tuple, list)) else None
        facts = {"input_style": style, "tuple_index": index, "tuple_length": tuple_length,
                 "output_shape": list(scores.shape), "output_kind": "" if regression else _output_kind(scores),
                 "output_finite": bool(torch.isfinite(scores).all())}
        model.train()
        return facts
    model.train()
    return {"input_style": None, "forward_errors": problems}


def _hooked_forward(model, x, modules):
    """One forward pass recording (module, input, output) for `modules`; None if the pass fails."""
    calls = []
    hooks = [_register_forward_hook(m, lambda mod, inp, out: calls.append((mod, inp, out))) for m in modules]
    try:
        model.eval()
        with torch.no_grad():
            output = model(x)
    except Exception:  # noqa: BLE001 - the forward pass worked on ordinary rows; extreme ones may not
        return None
    finally:
        for hook in hooks:
            hook.remove()
        model.train()
    return calls, output


def _linear_path(model, x):
    """The Linear layers a forward pass runs, in order (a layer defined but never used is not a layer
    of the network), and for each pair called one after the other, which function joins them."""
    names = {id(m): name for name, m in _walk(model) if isinstance(m, _LINEAR)}
    recorded = _hooked_forward(model, x, [m for _, m in _walk(model) if id(m) in names])
    if recorded is None:
        return {}
    calls = recorded[0]
    return {"linears_run": [names[id(module)] for module, _, _ in calls],
            "activations": [_which_function(previous_out.detach(), inputs[0].detach())
                            for (_, _, previous_out), (_, inputs, _) in zip(calls, calls[1:])]}


def _which_function(before, after):
    """The name of the function in _FUNCTIONS that maps `before` to `after`, or "other"."""
    if before.shape != after.shape:
        return "other"
    for name, function in _FUNCTIONS.items():
        if _same(function(before), after):
            return name
    if before.dim() > 1 and len(before) > 1 and _same(_softmax(before, dim=0), after):
        return "softmax"  # over the batch: nn.Softmax(dim=0)
    return "other"


def _extreme_inputs(sample, seed):
    """Feature rows far outside the data: the sample and random rows, scaled up to 1000 times and negated."""
    base = torch.from_numpy(np.ascontiguousarray(sample)).float()
    noise = torch.randn(64, *base.shape[1:], generator=torch.Generator().manual_seed(seed))
    rows = torch.cat([base, noise])
    return torch.cat([rows * scale for scale in EXTREME_SCALES])


def _output_head(model, x, index):
    """What happens to a regressor's output after its last Linear layer, seen on extreme inputs.

    Plain data for the parent: the function joining the last nn.Linear's output to the model's
    output ("identity" when nothing does; "other" when none of _FUNCTIONS fits; absent
    when no nn.Linear ran last), the last torch.nn module when its output is the model's output,
    and the range of the outputs.
    """
    recorded = _hooked_forward(model, x, [m for _, m in _leaves(model)])
    if recorded is None:
        return {}
    calls, output = recorded
    scores = (output if index is None else output[index]).detach().float().reshape(len(x), -1)
    facts = {}
    finite = scores[torch.isfinite(scores)]
    if finite.numel():
        facts["output_range"] = [float(finite.min()), float(finite.max())]
    linears = [out for mod, _, out in calls if isinstance(mod, _LINEAR) and isinstance(out, torch.Tensor)]
    if linears and linears[-1].numel() == scores.numel():
        facts["output_activation"] = _which_function(linears[-1].detach().float().reshape(scores.shape), scores)
    if calls:
        last, _, out = calls[-1]
        torch_class = _torch_class(last)
        if torch_class and isinstance(out, torch.Tensor) \
                and out.numel() == scores.numel() and _same(out.detach().float().reshape(scores.shape), scores):
            facts["last_module"] = torch_class.__name__
    return facts


def _same(a, b):
    both = torch.isfinite(a) & torch.isfinite(b)
    if not bool(both.any()) or not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return False
    return torch.allclose(a[both], b[both], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------
# Training


def _optimizer(name, parameters, lr):
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def _loss(kind, scores, targets):
    if kind == "regression-mse":
        return F.mse_loss(scores.reshape(-1), targets)
    if kind == "regression-mae":
        return F.l1_loss(scores.reshape(-1), targets)
    if kind == "probabilities":
        # NLL on log-probabilities: cross-entropy on probabilities would apply softmax twice
        return F.nll_loss(torch.log(scores.clamp_min(1e-12)), targets)
    if kind == "log-probabilities":
        return F.nll_loss(scores, targets)
    return F.cross_entropy(scores, targets)


def _outputs(model, x, spec, index, batch_size=1000):
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            output = model(x[start:start + batch_size].to(spec["device"]))
            scores = output if index is None else output[index]
            if spec.get("task") == "regression":
                scores = scores.reshape(-1, spec["n_outputs"])  # (B,) as well as (B, 1)
            chunks.append(scores.float().cpu().numpy())
    model.train()
    return np.concatenate(chunks) if chunks else np.zeros((0, spec["n_outputs"]), dtype=np.float32)


def _train(namespace, spec):
    started = time.monotonic()
    model, facts = _build(namespace, spec)
    if model is None:
        return facts
    device = spec["device"]
    model.to(device)
    style, index, kind = spec["input_style"], spec["tuple_index"], spec["loss_kind"]
    train_x = _shape(np.load(spec["train_x"], allow_pickle=False), style, spec)
    train_y = torch.from_numpy(np.load(spec["train_y"], allow_pickle=False))
    train_y = train_y.float() if spec.get("task") == "regression" else train_y.long()
    test_x = _shape(np.load(spec["test_x"], allow_pickle=False), style, spec)
    budget = spec["budget"]
    optimizer = _optimizer(budget["optimizer"], _parameters(model), budget["lr"])
    generator = torch.Generator().manual_seed(spec["seed"])
    history = {"train_loss": [], "train_accuracy": []}
    test_outputs = [_outputs(model, test_x, spec, index)]
    stopped, steps = None, 0
    for _epoch in range(budget["epochs"]):
        order = torch.randperm(len(train_x), generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), budget["batch_size"]):
            batch = order[start:start + budget["batch_size"]]
            xb, yb = train_x[batch].to(device), train_y[batch].to(device)
            output = model(xb)
            scores = output if index is None else output[index]
            loss = _loss(kind, scores, yb)
            if not torch.isfinite(loss):
                stopped = f"the loss became {loss.item()} at step {steps + 1}: training diverged"
                break
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            loss_sum += loss.item() * len(batch)
            seen += len(batch)
            if spec.get("task") != "regression":
                correct += int((scores.detach().argmax(dim=1) == yb).sum())
            if time.monotonic() - started > spec["max_seconds"]:
                stopped = f"the grader's safety limit of {spec['max_seconds']:.0f} s was reached"
                break
        if seen:
            history["train_loss"].append(loss_sum / seen)
            history["train_accuracy"].append(correct / seen if spec.get("task") != "regression" else math.nan)
            test_outputs.append(_outputs(model, test_x, spec, index))
        if stopped:
            break
    return {"epochs_run": len(history["train_loss"]), "steps": steps, "history": history,
            "test_outputs": test_outputs, "stopped_early": stopped,
            "wall_s": time.monotonic() - started, "device": device}
