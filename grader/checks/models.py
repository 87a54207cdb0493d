"""Checks on a student's model and on the grader's training of it. Pure.

Inputs are the records from grader.models (a ModelDescription, a
TrainingRun and the task's data); outputs are Outcomes with messages that
name what was found against what was expected.
"""

from __future__ import annotations

from itertools import zip_longest

from grader.models import ModelDescription, TaskData, TrainingRun, accuracy, classification_details
from grader.scoring import Outcome, linear_credit

# Layers a "fully connected" network may contain besides nn.Linear.
DENSE_COMPANIONS = frozenset({
    "ReLU", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Sigmoid", "Tanh",
    "Softmax", "LogSoftmax", "Softplus", "Hardtanh", "ReLU6", "Hardswish", "Hardsigmoid", "Identity",
    "Flatten", "Unflatten", "Dropout", "AlphaDropout", "BatchNorm1d", "LayerNorm",
})


def unusable(description: ModelDescription, factory: str = "build_model") -> Outcome | None:
    """A failed Outcome when there is no model to check, else None."""
    if description.refused_params:
        return Outcome.failed(f"{factory}() would create {description.refused_params:,} parameters, far more than "
                              "this assignment allows; the grader refused to build it")
    if not description.is_module:
        return Outcome.failed(f"{factory}() returned a {description.type_name or 'value'}, not a torch.nn.Module")
    return None


def returns_module(description: ModelDescription, factory: str = "build_model") -> Outcome:
    return unusable(description, factory) or Outcome.passed(
        f"{factory}() returns a torch.nn.Module ({description.class_name})")


def _linear_text(description: ModelDescription) -> str:
    found = description.linear_layers
    return " → ".join([str(found[0].in_features)] + [str(layer.out_features) for layer in found]) if found else "none"


def exact_linear_stack(description: ModelDescription, dims: list[int]) -> Outcome:
    """Exactly len(dims) - 1 nn.Linear layers with these sizes, e.g. [784, 1500, 10]."""
    problem = unusable(description)
    if problem:
        return problem
    found = description.linear_layers
    expected_text = " → ".join(map(str, dims))
    pairs = [(layer.in_features, layer.out_features) for layer in found]
    expected = list(zip(dims, dims[1:]))
    if pairs == expected:
        return Outcome.passed(f"{len(found)} nn.Linear layers: {expected_text}")
    return Outcome.failed(f"expected {len(expected)} nn.Linear layers {expected_text}, found {len(found)}: "
                          f"{_linear_text(description)}", layers=layer_table(description, dims))


def layer_table(description: ModelDescription, dims: list[int]) -> list[dict]:
    """Expected against found, one row per Linear layer, with parameter counts."""
    rows = []
    expected = list(zip(dims, dims[1:]))
    for i, (want, layer) in enumerate(zip_longest(expected, description.linear_layers)):
        want_text = (f"Linear({want[0]} → {want[1]}): {want[0] * want[1] + want[1]:,} parameters"
                     if want else "(none)")
        found_text = f"{layer.shape_text()}: {layer.params:,} parameters" if layer else "(missing)"
        ok = bool(want and layer and (layer.in_features, layer.out_features) == want
                  and layer.params == want[0] * want[1] + want[1])
        rows.append({"layer": layer.name if layer else f"layer {i + 1}", "expected": want_text,
                     "found": found_text, "ok": ok})
    others = [layer for layer in description.layers if not layer.is_linear and layer.params]
    for layer in others:
        rows.append({"layer": layer.name, "expected": "(none)", "found": f"{layer.type}: {layer.params:,} parameters",
                     "ok": False})
    return rows


def parameter_count(description: ModelDescription, dims: list[int]) -> Outcome:
    problem = unusable(description)
    if problem:
        return problem
    expected = sum(a * b + b for a, b in zip(dims, dims[1:]))
    found = description.total_params
    table = layer_table(description, dims)
    if found == expected:
        return Outcome.passed(f"{found:,} parameters, as expected", layers=table)
    return Outcome.failed(f"expected {expected:,} parameters, found {found:,} "
                          f"({found - expected:+,}); see the layer-by-layer table", layers=table,
                          expected=expected, found=found)


def output_shape(description: ModelDescription, n_outputs: int) -> Outcome:
    problem = unusable(description)
    if problem:
        return problem
    if description.input_style is None:
        tried = "; ".join(f"{style} input: {error}" for style, error in description.forward_errors.items())
        return Outcome.failed(f"the forward pass failed on a batch of inputs ({tried})")
    if not description.output_finite:
        return Outcome.failed("the model's output contains NaN or infinity for ordinary inputs")
    return Outcome.passed(f"output shape (B, {n_outputs}); the model {description.style_text()}",
                          detected=description.style_text())


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


def fully_connected_only(description: ModelDescription) -> Outcome:
    problem = unusable(description)
    if problem:
        return problem
    foreign = [layer for layer in description.layers
               if not layer.is_linear and not (layer.from_torch and layer.type in DENSE_COMPANIONS)]
    if not foreign:
        return Outcome.passed("only fully connected layers and activations")
    names = ", ".join(f"{layer.name} ({layer.type})" for layer in foreign[:5])
    return Outcome.failed(f"this assignment asks for a fully connected network: {names} "
                          f"{'is' if len(foreign) == 1 else 'are'} not allowed "
                          "(use nn.Linear layers and activations only)")


def pretrained(run: TrainingRun, data: TaskData, limit: float) -> Outcome | None:
    """A failed Outcome when the model was accurate before the grader's first step."""
    before = accuracy(run.test_outputs[0], data.test_y)
    if before > limit:
        return Outcome.failed(f"the model was already trained when build_model() returned: {before:.1%} test "
                              f"accuracy before the grader's first step (chance is about "
                              f"{1 / run.test_outputs[0].shape[1]:.0%}). build_model() must return an "
                              "untrained model; the grader trains it", initial_test_accuracy=before)
    return None


def accuracy_outcome(run: TrainingRun, data: TaskData, *, floor: float, target: float,
                     pretrained_limit: float, notes: list[str] = ()) -> Outcome:
    """Full credit at or above `target`, linear down to zero at `floor`."""
    details = classification_details(run, data)
    flagged = pretrained(run, data, pretrained_limit)
    if flagged:
        return Outcome.failed(flagged.message, **details)
    final = accuracy(run.final_outputs, data.test_y)
    fraction = linear_credit(final, floor=floor, target=target)
    trained = f"after the grader's training ({run.budget.text()}, on {len(data.train_y):,} images)"
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
