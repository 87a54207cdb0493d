"""Checks on a student's model and on the grader's training of it. Pure.

Inputs are the records of grader.ml (a ModelDescription, a TrainingRun and
the task's data); outputs are Outcomes with messages that name what was found
against what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise, zip_longest

import numpy as np

from grader.ml.description import FUNCTIONS, ModelDescription
from grader.ml.metrics import accuracy, classification_details, mean_squared_error
from grader.ml.task import TaskData
from grader.ml.training import TrainingRun
from grader.scoring import Outcome, linear_credit

# Layers a "fully connected" network may contain besides nn.Linear.
DENSE_COMPANIONS = frozenset({
    "ReLU", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Sigmoid", "Tanh",
    "Softmax", "LogSoftmax", "Softplus", "Hardtanh", "ReLU6", "Hardswish", "Hardsigmoid", "Identity",
    "Flatten", "Unflatten", "Dropout", "AlphaDropout", "BatchNorm1d", "LayerNorm",
})


def called(factory: str) -> str:
    """How a message names the call: `build_model` as build_model(), a call with its arguments as it is."""
    return factory if factory.endswith(")") else f"{factory}()"


def unusable(description: ModelDescription, factory: str = "build_model") -> Outcome | None:
    """A failed Outcome when there is no model to check, else None."""
    if description.refused_params:
        return Outcome.failed(f"{called(factory)} would create {description.refused_params:,} parameters, far more "
                              "than this assignment allows; the grader refused to build it")
    if not description.is_module:
        return Outcome.failed(f"{called(factory)} returned a {description.type_name or 'value'}, not a "
                              "torch.nn.Module")
    return None


def returns_module(description: ModelDescription, factory: str = "build_model") -> Outcome:
    return unusable(description, factory) or Outcome.passed(
        f"{called(factory)} returns a torch.nn.Module ({description.class_name})")


def _linear_text(description: ModelDescription) -> str:
    found = description.linear_layers
    text = " → ".join([str(found[0].in_features)] + [str(layer.out_features) for layer in found]) if found else "none"
    unused = description.unused_linear_layers
    if unused:
        names = ", ".join(layer.name for layer in unused)
        text += f"; {names} {'is' if len(unused) == 1 else 'are'} defined but never used in forward"
    return text


def exact_linear_stack(description: ModelDescription, dims: list[int]) -> Outcome:
    """Exactly len(dims) - 1 nn.Linear layers with these sizes, e.g. [784, 1500, 10]."""
    problem = unusable(description)
    if problem:
        return problem
    found = description.linear_layers
    expected_text = " → ".join(map(str, dims))
    pairs = [(layer.in_features, layer.out_features) for layer in found]
    expected = list(pairwise(dims))
    if pairs == expected and not description.unused_linear_layers:
        return Outcome.passed(f"{len(found)} nn.Linear layers: {expected_text}")
    return Outcome.failed(f"expected {len(expected)} nn.Linear layers {expected_text}, found {len(found)}: "
                          f"{_linear_text(description)}", layers=layer_table(description, dims))


def layer_table(description: ModelDescription, dims: list[int]) -> list[dict]:
    """Expected against found, one row per Linear layer, with parameter counts."""
    rows = []
    expected = list(pairwise(dims))
    for i, (want, layer) in enumerate(zip_longest(expected, description.linear_layers)):
        want_text = (f"Linear({want[0]} → {want[1]}): {want[0] * want[1] + want[1]:,} parameters"
                     if want else "(none)")
        found_text = f"{layer.shape_text()}: {layer.params:,} parameters" if layer else "(missing)"
        ok = bool(want and layer and (layer.in_features, layer.out_features) == want
                  and layer.params == want[0] * want[1] + want[1])
        rows.append({"layer": layer.name if layer else f"layer {i + 1}", "expected": want_text,
                     "found": found_text, "ok": ok})
    for layer in description.unused_linear_layers:
        rows.append({"layer": layer.name, "expected": "(none)", "ok": False,
                     "found": f"{layer.shape_text()}: {layer.params:,} parameters, never used in forward"})
    others = [layer for layer in description.layers if not layer.is_linear and layer.params]
    for layer in others:
        rows.append({"layer": layer.name, "expected": "(none)", "found": f"{layer.type}: {layer.params:,} parameters",
                     "ok": False})
    return rows


def parameter_count(description: ModelDescription, dims: list[int]) -> Outcome:
    problem = unusable(description)
    if problem:
        return problem
    expected = sum(a * b + b for a, b in pairwise(dims))
    found = description.total_params
    table = layer_table(description, dims)
    if found == expected:
        return Outcome.passed(f"{found:,} parameters, as expected", layers=table)
    return Outcome.failed(f"expected {expected:,} parameters, found {found:,} "
                          f"({found - expected:+,}); see the layer-by-layer table", layers=table,
                          expected=expected, found=found)


def output_shape(description: ModelDescription, n_outputs: int, factory: str = "build_model") -> Outcome:
    problem = unusable(description, factory) or output_shape_problem(description)
    if problem:
        return problem
    if description.input_style is None:
        tried = "; ".join(f"{style} input: {error}" for style, error in description.forward_errors.items())
        return Outcome.failed(f"the forward pass failed on a batch of inputs ({tried})")
    if not description.output_finite:
        return Outcome.failed("the model's output contains NaN or infinity for ordinary inputs")
    return Outcome.passed(f"output shape (B, {n_outputs}); the model {description.style_text()}",
                          detected=description.style_text())


def output_shape_problem(description: ModelDescription) -> Outcome | None:
    """A failed Outcome when the model cannot be run as the grader rebuilds it, else None."""
    if description.unrebuildable:
        return Outcome.failed(f"the grader cannot rebuild the model: {description.unrebuildable}")
    return None


def activation_between(description: ModelDescription, activation: str = "relu") -> Outcome:
    problem = unusable(description)
    if problem:
        return problem
    if not description.activations:
        return Outcome.failed(f"could not see a {activation.upper() if activation == 'relu' else activation} "
                              "between the layers (fewer than two Linear layers ran in the forward pass)")
    wrong = [i for i, found in enumerate(description.activations) if found != activation]
    if not wrong:
        return Outcome.passed(f"{activation} between the Linear layers")
    i = wrong[0]
    return Outcome.failed(f"between Linear layers {i + 1} and {i + 2} the grader found "
                          f"{description.activations[i]!r}, expected {activation!r}",
                          activations=list(description.activations))


def min_linear_layers(description: ModelDescription, minimum: int) -> Outcome:
    problem = unusable(description)
    if problem:
        return problem
    count = len(description.linear_layers)
    if count >= minimum:
        return Outcome.passed(f"{count} nn.Linear layers ({_linear_text(description)})")
    return Outcome.failed(f"the network needs at least {minimum} nn.Linear layers; it has {count} "
                          f"({_linear_text(description)})")


# torch functions that are not fully connected: a convolution or pooling written in forward counts too
NOT_DENSE_FUNCTIONS = frozenset({"F.conv2d", "F.max_pool2d", "F.avg_pool2d", "F.adaptive_avg_pool2d"})


def fully_connected_only(description: ModelDescription) -> Outcome:
    problem = unusable(description)
    if problem:
        return problem
    foreign = [f"{layer.name} ({layer.type})" for layer in description.layers
               if not layer.is_linear and not (layer.from_torch and layer.type in DENSE_COMPANIONS)]
    foreign += [f"{name} in forward" for name in description.functional_ops if name in NOT_DENSE_FUNCTIONS]
    if not foreign:
        return Outcome.passed("only fully connected layers and activations")
    names = ", ".join(foreign[:5])
    return Outcome.failed(f"this assignment asks for a fully connected network: {names} "
                          f"{'is' if len(foreign) == 1 else 'are'} not allowed "
                          "(use nn.Linear layers and activations only)")


def pretrained(run: TrainingRun, data: TaskData, limit: float, factory: str = "build_model") -> Outcome | None:
    """A failed Outcome when the model was accurate before the grader's first step."""
    before = accuracy(run.test_outputs[0], data.test_y)
    if before > limit:
        return Outcome.failed(f"the model was already trained when {called(factory)} returned: {before:.1%} test "
                              f"accuracy before the grader's first step (chance is about "
                              f"{1 / run.test_outputs[0].shape[1]:.0%}). {called(factory)} must return an "
                              "untrained model; the grader trains it", initial_test_accuracy=before)
    return None


def _samples(data: TaskData) -> str:
    return "images" if data.test_x.ndim >= 3 else "samples"


def accuracy_outcome(run: TrainingRun, data: TaskData, *, floor: float, target: float,
                     pretrained_limit: float, notes: Sequence[str] = (), factory: str = "build_model") -> Outcome:
    """Full credit at or above `target`, linear down to zero at `floor`. A binary classifier's run comes here
    with two columns of scores per sample (grader.ml.metrics.two_class_run)."""
    details = classification_details(run, data)
    flagged = pretrained(run, data, pretrained_limit, factory)
    if flagged:
        return Outcome.failed(flagged.message, **details)
    final = accuracy(run.final_outputs, data.test_y)
    fraction = linear_credit(final, floor=floor, target=target)
    trained = f"after the grader's training ({run.budget.text()}, on {len(data.train_y):,} {_samples(data)})"
    if run.epochs_run < run.budget.epochs:
        trained += f", stopped after {run.epochs_run} epoch{'s' if run.epochs_run != 1 else ''}"
    extra = "".join(f"; {note}" for note in notes)
    if run.stopped_early:
        extra += f"; training stopped early: {run.stopped_early}"
    if fraction >= 1:
        return Outcome(1.0, f"test accuracy {final:.2%} {trained}, above the {target:.0%} target{extra}", details)
    if fraction <= 0:
        return Outcome(0.0, f"test accuracy {final:.2%} {trained}; credit starts above {floor:.0%} and is full "
                            f"at {target:.0%}{extra}", details)
    return Outcome(fraction, f"test accuracy {final:.2%} {trained}: partial credit, full credit at "
                             f"{target:.0%}{extra}", details)


# --------------------------------------------------------------------------
# Regression: one output, no activation on it, test MSE against baselines

# torch.nn modules that are activations: one of these last in the model is an activation on the output.
ACTIVATION_MODULES = frozenset({
    "ReLU", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Sigmoid", "LogSigmoid",
    "Tanh", "Softmax", "Softmin", "LogSoftmax", "Softplus", "Softsign", "Hardtanh", "ReLU6", "Hardswish",
    "Hardsigmoid", "Tanhshrink", "Threshold",
})


def _forward_failed(description: ModelDescription, factory: str) -> Outcome | None:
    problem = unusable(description, factory) or output_shape_problem(description)
    if problem:
        return problem
    if description.input_style is None:
        tried = "; ".join(error for error in description.forward_errors.values())
        return Outcome.failed(f"the forward pass failed on a batch of feature rows ({tried})")
    return None


def regression_output_shape(description: ModelDescription, factory: str = "build_regressor") -> Outcome:
    """Shape (B, 1). A flat (B,) output fails here but is still trained (the grader reshapes it)."""
    return _one_output(description, factory)


def _one_output(description: ModelDescription, factory: str) -> Outcome:
    """Shape (B, 1) and finite; the pass message says what the grader detected the output to be."""
    problem = _forward_failed(description, factory)
    if problem:
        return problem
    shape = description.output_shape
    if len(shape) != 2:
        rows = f" for a batch of {shape[0]} rows" if shape else ""
        return Outcome.failed(f"the output has shape {tuple(shape)}{rows}, expected (B, 1): keep the last "
                              "dimension (no .squeeze() or .view(-1) in forward); the grader trained it anyway",
                              found=list(shape))
    if not description.output_finite:
        return Outcome.failed("the model's output contains NaN or infinity for ordinary inputs")
    return Outcome.passed(f"output shape (B, 1); the model {description.style_text()}",
                          detected=description.style_text())


def output_squashing(description: ModelDescription) -> str | None:
    """What keeps a regressor's output from taking any value, in words, or None when nothing seems to.

    Evidence, strongest first: the function joining the last nn.Linear's output to the model's
    output; the last torch.nn module; whether the output stops growing for inputs scaled up 10,000 times.
    """
    function, module = description.output_activation, description.last_module
    if function in FUNCTIONS and function not in ("identity", "other"):
        where = (f"nn.{module}, the last module of the model" if module in ACTIVATION_MODULES
                 else "applied in forward after the last nn.Linear layer")
        return f"{FUNCTIONS[function]} ({where})"
    if module in ACTIVATION_MODULES:
        return f"nn.{module}, the last module of the model"
    # Probing decides only where something does follow the last nn.Linear layer (or there is none):
    # hidden layers that saturate bound a network too, yet its last layer can still learn any scale.
    if function == "identity" or description.output_range is None or not description.bounded_output:
        return None
    low, high = description.output_range
    scaled = "even for inputs scaled up 10,000 times"
    if high - low <= 1e-6 * max(1.0, abs(low)):
        return (f"something that makes it constant: it is {low:.4g} for every input "
                "(a softmax over one output is always 1)")
    if low >= 0 and high <= 1:
        return f"something that keeps it within [0, 1] {scaled}, like a sigmoid"
    if low >= -1 and high <= 1:
        return f"something that keeps it within [-1, 1] {scaled}, like a tanh"
    return f"something that keeps it within [{low:.3g}, {high:.3g}] {scaled}"


def no_output_activation(description: ModelDescription, factory: str = "build_regressor",
                         targets: str = "house values here go up to 5") -> Outcome:
    problem = _forward_failed(description, factory)
    if problem:
        return problem
    details = {"output_range_on_extreme_inputs": list(description.output_range)} if description.output_range else {}
    found = output_squashing(description)
    if found:
        return Outcome.failed(f"the output passes through {found}; a regressor's last layer must have no "
                              f"activation, so that it can predict any value ({targets})",
                              **details)
    after = ("nothing follows the last nn.Linear layer" if description.output_activation == "identity"
             else "the output is not squashed")
    return Outcome.passed(f"no activation on the output: {after}", **details)


def _trained_text(run: TrainingRun, data: TaskData) -> str:
    text = f"after the grader's training ({run.budget.text()}, on {len(data.train_y):,} samples)"
    if run.epochs_run < run.budget.epochs:
        text += f", stopped after {run.epochs_run} epoch{'s' if run.epochs_run != 1 else ''}"
    if run.stopped_early:
        text += f"; training stopped early: {run.stopped_early}"
    return text


def _notes(notes) -> str:
    return "".join(f"; {note}" for note in notes)


def regression_pretrained(run: TrainingRun, data: TaskData, limit_mse: float) -> Outcome | None:
    """A failed Outcome when the model predicted well before the grader's first step."""
    before = mean_squared_error(run.test_outputs[0], data.test_y)
    if before < limit_mse:
        return Outcome.failed(f"the model was already trained when it was built: test MSE {before:.3f} before the "
                              f"grader's first step (below the {limit_mse:.3f} a linear regression reaches). The "
                              "factory must return an untrained model; the grader trains it",
                              initial_test_mse=before)
    return None


def mse_below(run: TrainingRun, data: TaskData, *, baseline_mse: float, baseline: str = "linear regression",
              notes=(), **details) -> Outcome:
    """Passed when the test MSE is below the baseline's."""
    flagged = regression_pretrained(run, data, baseline_mse)
    if flagged:
        return flagged
    mse = mean_squared_error(run.final_outputs, data.test_y)
    details = {"test_mse": mse, f"{baseline.replace(' ', '_')}_mse": baseline_mse, **details}
    found = f"test MSE {mse:.3f} {_trained_text(run, data)}"
    if mse < baseline_mse:
        return Outcome.passed(f"{found}, below {baseline}'s {baseline_mse:.3f}{_notes(notes)}", **details)
    return Outcome.failed(f"{found}, not below {baseline}'s {baseline_mse:.3f}{_notes(notes)}", **details)


def mse_near(run: TrainingRun, data: TaskData, *, reference_mse: float, factor: float, floor_mse: float,
             reference: str = "the random forest", floor: str = "linear regression", notes=(),
             **details) -> Outcome:
    """Full credit at or below factor × the reference's test MSE; none at or above the floor's; linear between."""
    flagged = regression_pretrained(run, data, floor_mse)
    if flagged:
        return Outcome.failed(flagged.message, **details)
    mse = mean_squared_error(run.final_outputs, data.test_y)
    target = factor * reference_mse
    fraction = linear_credit(-mse, floor=-floor_mse, target=-target)
    found = f"test MSE {mse:.3f} {_trained_text(run, data)}"
    scale = (f"full credit at or below {target:.3f} ({factor:g} × {reference}'s {reference_mse:.3f}), "
             f"none at or above {floor}'s {floor_mse:.3f}")
    if fraction >= 1:
        return Outcome(1.0, f"{found}: within {factor:g} × {reference}'s {reference_mse:.3f}{_notes(notes)}",
                       details)
    if fraction <= 0:
        return Outcome(0.0, f"{found}: {scale}{_notes(notes)}", details)
    return Outcome(fraction, f"{found}: partial credit; {scale}{_notes(notes)}", details)


# --------------------------------------------------------------------------
# Convolutional networks: convolutions the forward pass calls, a parameter cap, the feature maps


def feature_map_table(description: ModelDescription) -> dict:
    """details["table"]: what each layer the forward pass calls gives for one sample, and its parameters;
    the layers as defined when the model did not run."""
    rows = []
    if description.feature_maps:
        if description.input_shape:
            rows.append(["input", "", _shape_text(description.input_shape), ""])
        rows += [[fm.name, fm.kind, _shape_text(fm.shape), "" if fm.params is None else f"{fm.params:,}"]
                 for fm in description.feature_maps]
        title = "Feature maps, layer by layer (the output of each step for one input)"
    else:
        rows += [[layer.name, layer.shape_text(), "", f"{layer.params:,}"] for layer in description.layers]
        title = "Layers (the forward pass did not run, so no feature maps)"
    rows.append(["total", "", "", f"{description.total_params:,}"])
    return {"title": title, "columns": ["layer", "type", "output shape", "parameters"], "rows": rows}


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def convolutions_called(description: ModelDescription) -> list[str] | None:
    """The standard nn.Conv2d layers the traced forward pass calls, in order; None when it was not traced."""
    graph = description.graph
    if graph is None or graph.nodes is None:
        return None
    return list(dict.fromkeys(node.target for node in graph.nodes if node.op == "call_module"
                              and (module := graph.module(node.target)) is not None and module.standard == "Conv2d"))


def uses_convolution(description: ModelDescription, factory: str = "build_model") -> Outcome:
    """At least one standard nn.Conv2d layer that the forward pass calls."""
    problem = unusable(description, factory)
    if problem:
        return problem
    table = feature_map_table(description)
    found = convolutions_called(description)
    if found is None:
        return Outcome.failed(f"the grader could not see which layers the forward pass calls: "
                              f"{description.unrebuildable or 'it was not traced'}", table=table)
    if found:
        names = ", ".join(found[:5])
        return Outcome.passed(f"{len(found)} nn.Conv2d layer{'s' if len(found) != 1 else ''} in the forward pass "
                              f"({names})", table=table)
    why = []
    unused = [layer.name for layer in description.layers if layer.type == "Conv2d" and layer.from_torch]
    if unused:
        why.append(f"{', '.join(unused[:3])} {'is' if len(unused) == 1 else 'are'} defined but never used in forward")
    custom = [layer.name for layer in description.layers if "subclass of nn.Conv2d" in layer.type]
    if custom:
        why.append(f"{', '.join(custom[:3])} overrides the forward of nn.Conv2d, so it is a custom layer")
    if "F.conv2d" in description.functional_ops:
        why.append("F.conv2d in forward does not count")
    detail = f" ({'; '.join(why)})" if why else ""
    return Outcome.failed(f"this assignment asks for a convolutional network: the forward pass calls no nn.Conv2d "
                          f"layer{detail}. Use at least one nn.Conv2d layer in forward", table=table)


def max_parameters(description: ModelDescription, maximum: int, factory: str = "build_model") -> Outcome:
    """At most `maximum` parameters; over it, the layer-by-layer table shows where they are."""
    problem = unusable(description, factory)
    if problem:
        return problem
    # fixed weights the forward reads from buffers are weights all the same: a random projection
    # registered as a buffer must not slip under the cap
    found = description.total_params + description.buffer_values_read
    buffers = (f" (of which {description.buffer_values_read:,} are values in buffers the forward pass reads, "
               "which count as parameters)" if description.buffer_values_read else "")
    if found <= maximum:
        return Outcome.passed(f"{found:,} parameters{buffers}, within this assignment's cap of {maximum:,}")
    table = feature_map_table(description)
    return Outcome.failed(f"{found:,} parameters{buffers}, more than this assignment's cap of {maximum:,} "
                          f"({found - maximum:+,}); see the layer-by-layer table for where they are (a "
                          "Linear layer on a large feature map is the usual place)", table=table,
                          expected=f"at most {maximum:,}", found=found)


# --------------------------------------------------------------------------
# Binary classification: one output, a probability or a logit


def binary_output(description: ModelDescription, factory: str = "build_model") -> Outcome:
    """Shape (B, 1); says whether the grader found a probability or a logit. A flat (B,) output fails here
    but is still trained."""
    return _one_output(description, factory)


# --------------------------------------------------------------------------
# Regression against a fixed target


def mse_outcome(run: TrainingRun, data: TaskData, *, floor: float, target: float, pretrained_mse: float,
                notes=(), factory: str = "build_model", **details) -> Outcome:
    """Full credit at or below the `target` test MSE, none at or above `floor`, linear between; a model whose
    test MSE is below `pretrained_mse` before the grader's first step was trained already and earns nothing."""
    before = mean_squared_error(run.test_outputs[0], data.test_y)
    if before < pretrained_mse:
        return Outcome.failed(f"the model was already trained when {called(factory)} returned: test MSE "
                              f"{before:.4f} before the grader's first step. {called(factory)} must return an "
                              "untrained model; the grader trains it", initial_test_mse=before, **details)
    mse = mean_squared_error(run.final_outputs, data.test_y)
    details = {"test_mse": mse, **details}
    fraction = linear_credit(-mse, floor=-floor, target=-target)
    found = f"test MSE {mse:.4f} {_trained_text(run, data)}"
    if fraction >= 1:
        return Outcome(1.0, f"{found}, at or below the {target:g} target{_notes(notes)}", details)
    scale = f"full credit at or below {target:g}, none at or above {floor:g}"
    if fraction <= 0:
        return Outcome(0.0, f"{found}: {scale}{_notes(notes)}", details)
    return Outcome(fraction, f"{found}: partial credit; {scale}{_notes(notes)}", details)


def _number(value) -> float | None:
    """A plain number from what the child sent (int, float, 0-d or 1-element array), else None."""
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "iuf":
        value = value.reshape(-1)[0].item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def not_a_number(name: str, value, should_be: str) -> Outcome | None:
    """A failed Outcome when a declared value is not a finite number (None, a string, an array...)."""
    if _number(value) is None:
        return Outcome.failed(f"{name} = {_shown(value)} is not a number: set it to {should_be}")
    return None


def declared_parameter_count(value, description: ModelDescription, *, name: str = "N_PARAMS",
                             factory: str = "build_regressor(8)") -> Outcome:
    """The student's own count equals the model's (all parameters, or the trainable ones)."""
    problem = not_a_number(name, value, f"the number of parameters of {factory}") or unusable(
        description, factory.split("(")[0])
    if problem:
        return problem
    actual = description.total_params
    number = _number(value)
    assert number is not None, "not_a_number found none"
    if number in (actual, description.trainable_params):
        return Outcome.passed(f"{name} = {number:,.0f}, the number of parameters of {factory}")
    weights = sum((layer.in_features or 0) * (layer.out_features or 0) for layer in description.linear_layers)
    why = " (it looks like the biases were left out)" if number == weights and weights != actual else ""
    return Outcome.failed(f"{name} = {number:,.6g}, but {factory} has {actual:,} parameters "
                          f"({number - actual:+,.6g}){why}", expected=actual, found=number)


def declared_ratio(value, declared_params, description: ModelDescription, *, n_train: int, n_test: int,
                   name: str = "PARAMS_PER_SAMPLE", rtol: float = 0.01) -> Outcome:
    """The student's parameters per training sample, within rtol of the real ratio.

    Half credit when it is consistent with a wrong N_PARAMS (the mistake is counted once, there).
    """
    problem = not_a_number(name, value, "N_PARAMS divided by the number of training samples") or unusable(
        description, "build_regressor")
    if problem:
        return problem
    actual = description.total_params
    expected = actual / n_train
    number = _number(value)
    assert number is not None, "not_a_number found none"

    def near(target: float) -> bool:
        return math.isclose(number, target, rel_tol=rtol)

    details = {"expected": expected, "found": number}
    if near(expected):
        return Outcome.passed(f"{name} = {number:.4g}: {actual:,} parameters for {n_train:,} training samples",
                              **details)
    declared = _number(declared_params)
    if declared is not None and declared != actual and near(declared / n_train):
        return Outcome.partial(0.5, f"{name} = {number:.4g} is N_PARAMS / {n_train:,}, but N_PARAMS is wrong: "
                                    f"the model has {actual:,} parameters, so expected {expected:.4g}", **details)
    mistakes = {f"N / {n_train + n_test:,} (all samples, not only the training split)": actual / (n_train + n_test),
                f"N / {n_test:,} (the test samples)": actual / n_test,
                "the inverse (samples per parameter)": n_train / actual if actual else math.nan}
    why = next((f": it looks like {text}" for text, ratio in mistakes.items() if near(ratio)), "")
    return Outcome.failed(f"{name} = {number:.4g}, expected {expected:.4g} ({actual:,} parameters / "
                          f"{n_train:,} training samples){why}", **details)


def _shown(value) -> str:
    text = repr(value) if not isinstance(value, np.ndarray) else f"an array of shape {value.shape}"
    return text if len(text) <= 60 else text[:59] + "…"
