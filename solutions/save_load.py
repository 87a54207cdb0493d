"""save-load: spec and checks (instructor only; runs in the grader's process).

The course's last step: after training, keep the model. Students write
`build_model()` (an untrained MNIST network), `save_model(model, path)` and
`load_model(path)` with the model's `state_dict`, and `normalize(images)`,
mapping pixels in [0, 1] to [-1, 1] as the course's
`transforms.Normalize((0.5,), (0.5,))` does.

The grader builds the model in the sandbox, moves every weight (a stand-in for
training, so that a freshly built model is not the saved one), records its
outputs on 16 MNIST-like images, and has the student's save_model write it to
a path in the exchange directory (grader_child.persist). The file is opened
there, in the sandbox, with torch.load(weights_only=True) only; the grader's
process never unpickles it and gets back plain data: the keys, shapes and
dtypes it holds. Then the kernel is replaced by a fresh one that runs the
notebook again, so nothing of the saved model survives in memory, and
load_model(path) must give the saved model's outputs exactly (a model cached
in a global, or rebuilt untrained, does not). The normalisation is checked by
plans in the student bundle: its range and its values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from grader.assignment import Assignment, Check
from grader.checks.catalog import CallSpec, Plan, Probed
from grader.checks.numeric import NotNumeric, as_array
from grader.child import protocol
from grader.context import CheckContext
from grader.errors import StudentError
from grader.sandbox import Limits
from grader.scoring import Outcome

SEED = 314
N_IMAGES = 16
OUTPUT_RTOL = 1e-6  # the same weights on the same inputs in the same torch: equal, up to nothing
NORMALIZE_RTOL = 1e-6
FORMAT_PARTIAL = 1 / 3  # a file that opens safely but is not the model's state_dict
SHOWN_ENTRIES = 30
NORMALIZE_ADVICE = "subtract 0.5 and divide by 0.5, as transforms.Normalize((0.5,), (0.5,)) does"


def mnist_like(rng: np.random.Generator, n: int) -> np.ndarray:
    """n images (n, 1, 28, 28) of float32 grey levels k / 255, mostly black with bright strokes, as ToTensor
    gives them; the first holds an exact 0 and an exact 1."""
    levels = rng.integers(0, 256, size=(n, 1, 28, 28))
    levels = np.where(rng.random((n, 1, 28, 28)) < 0.3, levels, 0)
    levels[0, 0, 0, 0], levels[0, 0, 14, 14] = 0, 255
    return (levels / 255.0).astype(np.float32)


# --------------------------------------------------------------------------
# Visible checks: plans


def plan_normalize_range(inputs) -> Plan:
    images = mnist_like(inputs.rng("normalize-range"), 1)
    return Plan(calls=(CallSpec("normalize", (images,)),), judge="range", expected=images,
                params={"what": "normalize", "low": -1.0, "high": 1.0, "atol": 1e-6, "advice": NORMALIZE_ADVICE})


def plan_normalize_values(inputs) -> Plan:
    images = mnist_like(inputs.rng("normalize-values"), 2)
    return Plan(calls=(CallSpec("normalize", (images,)),), judge="close",
                expected=2.0 * images.astype(np.float64) - 1.0,
                params={"what": "normalize(images)", "rtol": NORMALIZE_RTOL, "advice": NORMALIZE_ADVICE})


# --------------------------------------------------------------------------
# Hidden checks: the model saved, the file, the model loaded in a fresh kernel


def _answer(value: Any, keys: tuple[str, ...], what: str) -> dict:
    if not isinstance(value, dict) or not set(keys) <= set(value):
        raise StudentError(f"the grader got a malformed answer about {what}", kind="broken")
    return value


def _outputs(value: Any, what: str) -> np.ndarray:
    try:
        return as_array(value, what=what)
    except NotNumeric as exc:
        raise StudentError(str(exc), kind="broken") from None


def saved_model(ctx: CheckContext) -> dict:
    """build_model(), weights moved, saved with save_model into the exchange (once per submission)."""

    def run() -> dict:
        images = mnist_like(ctx.rng("saved-model"), N_IMAGES)
        folder = ctx.sandbox.new_output_dir("saved-model")  # the exchange: it outlives the kernel
        request = protocol.SaveModel(factory="build_model", saver="save_model", path=str(folder / "model.pt"),
                                     seed=ctx.seed, images=images)
        built = _answer(ctx.run_child("persist", "build", request, what="build_model"),
                        ("is_module", "type", "style"), "build_model")
        if built["is_module"] is not True:
            raise StudentError(f"build_model returned a {str(built['type'])[:60]}, not an nn.Module",
                               kind="exception")
        answer = _answer(ctx.run_child("persist", "save", request, what="save_model"),
                         ("style", "outputs", "model_entries", "file"), "save_model")
        return {"images": images, "path": request.path, "style": str(answer["style"]),
                "outputs": _outputs(answer["outputs"], "the saved model's outputs"),
                "model_entries": answer["model_entries"], "file": answer["file"]}

    return ctx.memo("saved-model", run)


def _entry_map(entries: Any) -> dict[str, str]:
    """key -> "shape dtype" (or the value's type) from the child's [[key, shape, dtype], ...]."""
    shown = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, (list, tuple)) and len(entry) == 3:
            key, shape, dtype = entry
            shown[str(key)] = (f"{tuple(shape) if isinstance(shape, (list, tuple)) else ''} {dtype}".strip()
                               if shape is not None else f"a {dtype}")
    return shown


def _entry_table(held: dict[str, str], model: dict[str, str]) -> dict:
    keys = list(dict.fromkeys([*model, *held]))[:SHOWN_ENTRIES]
    return {"title": "What the file holds", "columns": ["key", "in the file", "in the model's state_dict"],
            "rows": [[key, held.get(key, "—"), model.get(key, "—")] for key in keys]}


def check_save_format(ctx: CheckContext) -> Outcome:
    saved = saved_model(ctx)
    file = saved["file"] if isinstance(saved["file"], dict) else {}
    if file.get("exists") is not True:
        return Outcome.failed("save_model(model, path) wrote no file at the path it was given: write it there "
                              "with torch.save(model.state_dict(), path)")
    if file.get("weights_only") is not True:
        return Outcome.failed(f"torch.load(path, weights_only=True) refuses the file save_model wrote: "
                              f"{str(file.get('error', ''))[:300]}. Saving the whole model pickles its Python "
                              "class; save model.state_dict() instead, a dict of tensors")
    held, model = _entry_map(file.get("entries")), _entry_map(saved["model_entries"])
    details = {"table": _entry_table(held, model)} if held or model else {}
    kind = str(file.get("kind", "?"))[:60]
    if "entries" not in file:
        return Outcome.partial(FORMAT_PARTIAL, f"the file opens safely but holds a {kind}, not a state_dict: save "
                                               "model.state_dict()", **details)
    if set(held) != set(model):
        extra = sorted(set(held) - set(model))
        named = ", ".join(extra[:4]) + (" …" if len(extra) > 4 else "") if extra else "fewer keys"
        return Outcome.partial(FORMAT_PARTIAL, f"the file holds a dict whose keys are not the model's state_dict's "
                                               f"(it has {named}): save model.state_dict() itself, not a dict "
                                               "around it", **details)
    if held != model:
        wrong = next(k for k in model if held[k] != model[k])
        return Outcome.partial(FORMAT_PARTIAL, f"the file's {wrong} is {held[wrong]}; the model's is {model[wrong]}",
                               **details)
    difference = file.get("max_difference")
    if not isinstance(difference, (int, float)) or isinstance(difference, bool) or difference != 0:
        return Outcome.partial(FORMAT_PARTIAL, "the file holds a state_dict of the right keys and shapes, but not the "
                                               "weights of the model save_model was given: save that model's "
                                               "state_dict", max_difference=difference, **details)
    return Outcome.passed(f"the file is a plain state_dict ({len(held)} tensors with the model's keys, shapes and "
                          "values) that opens with torch.load(path, weights_only=True)", **details)


def loaded_model(ctx: CheckContext, saved: dict) -> np.ndarray:
    """load_model(path) in a fresh kernel that ran the notebook again: its outputs (once per submission)."""

    def run() -> np.ndarray:
        ctx.restart_kernel()
        request = protocol.LoadModel(loader="load_model", path=saved["path"], seed=ctx.seed + 1,
                                     images=saved["images"], style=saved["style"])
        answer = _answer(ctx.run_child("persist", "load", request, what="load_model"), ("outputs",), "load_model")
        return _outputs(answer["outputs"], "the loaded model's outputs")

    return ctx.memo("loaded-model", run)


def check_load_roundtrip(ctx: CheckContext) -> Outcome:
    saved = saved_model(ctx)
    expected = saved["outputs"]
    found = loaded_model(ctx, saved)
    if found.shape != expected.shape:
        return Outcome.failed(f"the loaded model's outputs have shape {found.shape}; the saved model's "
                              f"{expected.shape}: load_model should build the same network and load the weights")
    keep = slice(0, 2000)
    details = {"scatter": {"x": np.round(expected.reshape(-1)[keep], 5).tolist(),
                           "y": np.round(np.nan_to_num(found, nan=0.0, posinf=1e6, neginf=-1e6).reshape(-1)[keep],
                                         5).tolist(),
                           "x_label": "saved model's output", "y_label": "loaded model's output", "diagonal": True}}
    if np.allclose(found, expected, rtol=OUTPUT_RTOL, atol=0.0):
        return Outcome.passed(f"in a fresh kernel, load_model(path) gives the saved model's outputs on the grader's "
                              f"{N_IMAGES} images", **details)
    difference = float(np.nanmax(np.abs(found - expected))) if np.isfinite(found).any() else float("inf")
    return Outcome.failed(f"in a fresh kernel, load_model(path) gives other outputs than the saved model (they "
                          f"differ by up to {difference:.3g}): build a new model with build_model() and "
                          "load_state_dict(torch.load(path)) into it", max_difference=difference, **details)


ASSIGNMENT = Assignment(
    id="save-load",
    title="Saving and loading a trained model",
    notebook="save_load.ipynb",
    required_names=("build_model", "save_model", "load_model", "normalize"),
    limits=Limits(cell_timeout_s=60, total_timeout_s=300, memory_mb=3072),
    seed=SEED,
    checks=(
        Check("normalize-range", "normalize maps [0, 1] onto [-1, 1]", 1, Probed(plan_normalize_range)),
        Check("normalize-values", "normalize gives the course transform's values", 2, Probed(plan_normalize_values)),
        Check("save-format", "save_model writes a plain state_dict", 3, check_save_format, visibility="hidden",
              hint="Save the model's state_dict, not the model object: the file must open with "
                   "torch.load(path, weights_only=True) and hold exactly that dict of tensors."),
        Check("load-roundtrip", "load_model restores the saved model in a fresh kernel", 4, check_load_roundtrip,
              visibility="hidden",
              hint="load_model runs in a new Python process, where nothing kept in memory survives: build a "
                   "new model with build_model() and load the saved state_dict from the file into it."),
    ),
)
