"""What the grader learns by running its rebuild of a student's model (in the trainer, grader/ml/trainer.py,
which writes it back as data: analysis_from reads it).

From the rebuild alone, on the probe inputs: which input shape the model
takes, where its scores are in its output and what they are (logits,
probabilities, log-probabilities), whether the student's own forward pass gave
the same outputs as its parts do, how much memory a sample's activations take
and the shape of each node's output (the feature maps, layer by layer), and,
for a regressor or a binary classifier, whether its output stays bounded
however large the input grows (probed, not guessed from names): a binary
classifier whose output stays within [0, 1] gives a probability, any other a
logit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grader.ml.graph import ModelGraph, ProbeAnswer
from grader.ml.task import ModelTask, model_inputs

EXTREME_SCALES = (1.0, 1e2, 1e3, 1e4)
# What one sample's forward pass may cost before the grader runs the rebuild on real values in the trainer
# (probes, extreme inputs: some 700 samples in all). A course model needs a few MB and a few
# MFLOP a sample; a graph that expands to a size of the student's choosing, or chains large products,
# is refused from its shapes alone, propagated on torch's meta device, where nothing is computed.
MAX_SAMPLE_BYTES = 64 << 20
MAX_SAMPLE_FLOPS = 200e6
_PRODUCTS = ("torch.matmul", "operator.matmul", "matmul", "F.linear")
PROBE_RTOL, PROBE_ATOL = 1e-3, 1e-4
BOUNDED_GROWTH = 3.0  # a 10-fold larger input moves an unbounded (linear) head about 10-fold


@dataclass(frozen=True)
class Analysis:
    input_style: str | None = None  # "image" (B, 1, 28, 28) | "flat" (B, 784) | "features" (B, n)
    forward_errors: dict[str, str] = field(default_factory=dict)
    tuple_index: int | None = None
    tuple_length: int | None = None
    output_shape: tuple[int, ...] = ()
    output_kind: str = ""  # classification: "logits" | "probabilities" | "log-probabilities"; binary:
    # "probability" | "logit"
    output_finite: bool = True
    probe_mismatch: str = ""  # how the student's own forward differed from its rebuild
    activation_bytes: int = 0  # per sample, forward pass
    node_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # traced node -> its output's shape
    # for one sample (without the batch dimension), for nodes whose output is one tensor
    output_range: tuple[float, float] | None = None  # regression and binary, on extreme inputs
    bounded_output: bool | None = None  # regression and binary: stays within a range however large the input


def analysis_to_answer(analysis: Analysis) -> dict[str, Any]:
    """The analysis as the trainer writes it back (grader/ml/trainer.py)."""
    return dataclasses.asdict(analysis)


def analysis_from(answer: Any) -> Analysis:
    """The trainer's analysis, checked as data (ValueError, TypeError or KeyError when malformed)."""
    def text(value: Any) -> str:
        if not isinstance(value, str):
            raise TypeError("a text")
        return value[:1000]

    def optional_int(value: Any) -> int | None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise TypeError("an integer")
        return value

    def shape(value: Any) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or len(value) > 16 or \
                not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
            raise TypeError("a shape")
        return tuple(value)

    def flag(value: Any) -> bool | None:
        if value is not None and not isinstance(value, bool):
            raise TypeError("a flag")
        return value

    style = answer["input_style"]
    low_high = answer["output_range"]
    errors, shapes = answer["forward_errors"], answer["node_shapes"]
    if not isinstance(errors, dict) or not isinstance(shapes, dict) or len(shapes) > 100_000:
        raise TypeError("a mapping")
    return Analysis(
        input_style=None if style is None else text(style), tuple_index=optional_int(answer["tuple_index"]),
        forward_errors={text(k): text(v) for k, v in errors.items()},
        tuple_length=optional_int(answer["tuple_length"]), output_shape=shape(answer["output_shape"]),
        output_kind=text(answer["output_kind"]), output_finite=bool(flag(answer["output_finite"])),
        probe_mismatch=text(answer["probe_mismatch"]),
        activation_bytes=int(optional_int(answer["activation_bytes"]) or 0),
        node_shapes={text(k): shape(v) for k, v in shapes.items()},
        output_range=None if low_high is None else (float(low_high[0]), float(low_high[1])),
        bounded_output=flag(answer["bounded_output"]))


def analyze_rebuild(graph: ModelGraph, task: ModelTask, probes: dict[str, np.ndarray], *,
                    seed: int) -> tuple[str, Analysis]:
    """Why the model cannot be rebuilt ("" when it can), and what its rebuild does on the probe inputs.
    It imports torch: the grader runs it in its trainer, a student's own check in their kernel."""
    from grader.ml.rebuild import RebuildError, rebuild

    try:
        too_costly = cost_problem(graph, task, probes)  # before anything real runs
        if too_costly:
            return too_costly, Analysis(forward_errors={})
        return "", analyze(graph, rebuild(graph), task, probes, seed=seed)
    except RebuildError as exc:
        return str(exc), Analysis(forward_errors={})


def cost_problem(graph: ModelGraph, task: ModelTask, probes: dict[str, np.ndarray]) -> str:
    """Why the rebuild's forward pass is too costly to run here ("" when it is not), from its shapes alone."""
    from grader.ml.rebuild import rebuild

    for style in task.input_styles:
        model = rebuild(graph).to("meta")
        x = shaped(probes[style][:2], style).to("meta")
        try:
            cost = _meta_cost(model, x)
        except Exception:  # this input style does not fit the model: analyze says why
            continue
        sample_bytes, sample_flops = (value / len(x) for value in cost)
        if sample_bytes > MAX_SAMPLE_BYTES:
            return (f"one sample's forward pass would hold {sample_bytes / 2**20:,.0f} MB of intermediate values; "
                    f"the grader allows {MAX_SAMPLE_BYTES / 2**20:,.0f} MB (make the layers smaller)")
        if sample_flops > MAX_SAMPLE_FLOPS:
            return (f"one sample's forward pass would take {sample_flops / 1e6:,.0f} million operations; the grader "
                    f"allows {MAX_SAMPLE_FLOPS / 1e6:,.0f} million (make the layers smaller)")
    return ""


def _meta_cost(model, x) -> tuple[float, float]:
    """Bytes of every node's output and floating-point operations of the products, on the meta device."""
    import torch

    nodes = {node.name: node for node in model._nodes}
    shapes: dict[str, tuple[int, ...]] = {}
    total = {"bytes": 0.0, "flops": 0.0}

    def inner(ref) -> int:
        shape = shapes.get(getattr(ref, "name", ""), ())
        return shape[-1] if shape else 1

    def record(name, value):
        items = value if isinstance(value, (tuple, list)) else [value]
        tensors = [item for item in items if isinstance(item, torch.Tensor)]
        total["bytes"] += sum(t.numel() * t.element_size() for t in tensors)
        if isinstance(value, torch.Tensor):
            shapes[name] = tuple(value.shape)
        out = sum(t.numel() for t in tensors)
        node = nodes[name]
        if node.op == "call_module":
            layer = model.layers[node.target.replace(".", "__")]
            weight = getattr(layer, "weight", None)
            per_output = weight[0].numel() if isinstance(weight, torch.Tensor) and weight.dim() >= 2 else 1
            total["flops"] += 2.0 * out * per_output
        elif node.target in _PRODUCTS and node.args:
            total["flops"] += 2.0 * out * inner(node.args[0])
        elif node.target == "F.conv2d" and len(node.args) > 1:
            weight = shapes.get(getattr(node.args[1], "name", ""), ())
            total["flops"] += 2.0 * out * (math.prod(weight[1:]) if len(weight) > 1 else 1)
        else:
            total["flops"] += out

    with torch.no_grad():
        model(x, record=record)
    return total["bytes"], total["flops"]


def shaped(array: np.ndarray, style: str):
    """The tensor a model is fed (grader.ml.task.model_inputs)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(model_inputs(array, style)))


def scores_in(output, batch: int, n_outputs: int, *, flat_ok: bool):
    """(index in a tuple or None, the (batch, n_outputs) float tensor); ValueError naming what was found."""
    import torch

    candidates = list(enumerate(output)) if isinstance(output, (tuple, list)) else [(None, output)]
    shapes = [(batch, n_outputs)] + ([(batch,)] if flat_ok and n_outputs == 1 else [])
    for index, item in candidates:
        if isinstance(item, torch.Tensor) and item.is_floating_point() and tuple(item.shape) in shapes:
            return index, item
    found = [tuple(item.shape) if isinstance(item, torch.Tensor) else type(item).__name__ for _, item in candidates]
    raise ValueError(f"forward returned {found[0] if len(found) == 1 else found}, "
                     f"expected shape ({batch}, {n_outputs})")


def output_kind(scores) -> str:
    import torch

    if scores.dim() != 2 or scores.shape[1] < 2:
        return "logits"
    if torch.all(scores >= 0) and torch.allclose(scores.sum(dim=1), torch.ones(len(scores)), atol=1e-4):
        return "probabilities"
    if torch.all(scores <= 0) and torch.allclose(torch.logsumexp(scores, dim=1), torch.zeros(len(scores)), atol=1e-4):
        return "log-probabilities"
    return "logits"


def analyze(graph: ModelGraph, model, task: ModelTask, probes: dict[str, np.ndarray], *, seed: int) -> Analysis:
    """Run the rebuild (evaluation mode, no gradients) on the probe inputs of each style the task allows."""
    import torch

    model.eval()
    errors: dict[str, str] = {}
    one_value = task.kind in ("regression", "binary")
    for style in task.input_styles:
        x = shaped(probes[style], style)
        try:
            with torch.no_grad():
                output = model(x)
            index, scores = scores_in(output, len(x), task.n_outputs, flat_ok=one_value)
        except Exception as exc:  # try the next style
            errors[style] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        length = len(output) if isinstance(output, (tuple, list)) else None
        activation_bytes, node_shapes = _recorded(model, x[:2])
        facts = dict(input_style=style, tuple_index=index, tuple_length=length, output_shape=tuple(scores.shape),
                     output_kind="" if one_value else output_kind(scores),
                     output_finite=bool(torch.isfinite(scores).all()),
                     probe_mismatch=mismatch(output, graph.probes.get(style)),
                     activation_bytes=activation_bytes, node_shapes=node_shapes, forward_errors=errors)
        if one_value:
            facts.update(_head_on_extreme_inputs(model, probes[style], index, seed))
        if task.kind == "binary":
            facts["output_kind"] = binary_kind(facts.get("output_range"))
        return Analysis(**facts)
    return Analysis(forward_errors=errors)


def binary_kind(output_range: tuple[float, float] | None) -> str:
    """A one-output classifier whose output stays within [0, 1] even on inputs far outside the data gives a
    probability (a sigmoid, or anything else that keeps it there); any other gives a logit."""
    if output_range is not None and output_range[0] >= 0.0 and output_range[1] <= 1.0:
        return "probability"
    return "logit"


def mismatch(output, answer: ProbeAnswer | None) -> str:
    """"" when the student's own forward gave what the rebuild gives, else how they differ."""
    import torch

    if answer is None:
        return "the model's own forward pass was not run on the grader's inputs"
    if answer.error:
        return f"the model's own forward pass failed on inputs its layers accept ({answer.error})"
    items = list(output) if isinstance(output, (tuple, list)) else [output]
    if answer.is_tuple != isinstance(output, (tuple, list)) or len(answer.outputs) != len(items[:8]):
        return "the model's own forward pass returns something else than its layers compute"
    for i, (mine, theirs) in enumerate(zip(items, answer.outputs, strict=False)):
        if not isinstance(mine, torch.Tensor):
            continue
        if theirs is None or tuple(theirs.shape) != tuple(mine.shape):
            return f"output {i} of the model's own forward pass has another shape than its layers compute"
        expected = mine.detach().float().numpy() if mine.is_floating_point() else mine.detach().numpy()
        if expected.dtype.kind == "f":
            if not np.allclose(theirs, expected, rtol=PROBE_RTOL, atol=PROBE_ATOL, equal_nan=True):
                worst = float(np.nanmax(np.abs(theirs.astype(np.float64) - expected)))
                return (f"the model's own forward pass gives other values than its layers compute "
                        f"(largest difference {worst:.3g} on the grader's inputs)")
        elif not np.array_equal(theirs, expected):
            return f"output {i} of the model's own forward pass differs from what its layers compute"
    return ""


def _recorded(model, x) -> tuple[int, dict[str, tuple[int, ...]]]:
    """The bytes of every node's output per sample, and each tensor node's output shape for one sample."""
    import torch

    total = [0]
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name, value):
        for item in (value if isinstance(value, (tuple, list)) else [value]):
            if isinstance(item, torch.Tensor):
                total[0] += item.numel() * item.element_size()
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == len(x):
            shapes[name] = tuple(int(d) for d in value.shape[1:])

    try:
        with torch.no_grad():
            model(x, record=record)
    except Exception:  # the forward pass worked on these inputs a moment ago
        return 0, {}
    return total[0] // max(1, len(x)), shapes


def _head_on_extreme_inputs(model, sample: np.ndarray, index: int | None, seed: int) -> dict:
    """The output range on inputs far outside the data, and whether it stops growing with them."""
    import torch

    base = torch.from_numpy(np.ascontiguousarray(sample)).float()
    directions = torch.cat([base, torch.randn(64, *base.shape[1:], generator=torch.Generator().manual_seed(seed))])
    directions = torch.cat([directions, -directions])
    largest = []
    low, high = math.inf, -math.inf
    for scale in EXTREME_SCALES:
        try:
            with torch.no_grad():
                output = model(directions * scale)
        except Exception:
            return {}
        scores = (output if index is None else output[index]).detach().double().reshape(len(directions), -1)
        finite = scores[torch.isfinite(scores)]
        if finite.numel():
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
            largest.append(float(finite.abs().max()))
    facts: dict[str, Any] = {"output_range": (low, high)} if math.isfinite(low) and math.isfinite(high) else {}
    if len(largest) == len(EXTREME_SCALES):
        facts["bounded_output"] = largest[-1] <= BOUNDED_GROWTH * max(largest[-2], 1e-12)
    return facts
