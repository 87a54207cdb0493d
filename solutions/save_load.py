"""save-load: spec and checks (instructor only; runs in the grader's process).

The course's last step: after training, keep the model. Students write
`build_model()` (an untrained MNIST network), `save_model(model, path)` and
`load_model(path)` with the model's `state_dict`, and `normalize(images)`,
mapping pixels in [0, 1] to [-1, 1] as the course's
`transforms.Normalize((0.5,), (0.5,))` does.

The grader builds the model in the sandbox, moves every weight (a stand-in for
training, so that a freshly built model is not the saved one), records its
outputs on 16 MNIST-like images and its state (every tensor, as data), and has
the student's save_model write it to a path in the exchange directory
(grader_child.persist). The grader copies the file out and opens it in a
process that never ran student code, with torch.load(weights_only=True) only
(grader/ml/state_file.py); its own process never unpickles it, and compares the
keys, shapes and values it holds with the model's. Then the kernel is replaced
by a fresh one that runs the notebook again, so nothing of the saved model
survives in memory, and load_model(path) must give the saved model's outputs
exactly and hold the saved weights (a model cached in a global, rebuilt
untrained, or whose output ignores its weights, does not). The normalisation is checked by
plans in the student bundle: its range and its values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from grader.course import (
    NO_FILE,
    Assignment,
    CallSpec,
    Check,
    CheckContext,
    Limits,
    LoadModel,
    NotNumeric,
    Outcome,
    Plan,
    Probed,
    SavedFile,
    SaveModel,
    StudentError,
    StudentErrorKind,
    as_array,
    read_saved_file,
)

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
        raise StudentError(f"the grader got a malformed answer about {what}", kind=StudentErrorKind.BROKEN)
    return value


def _outputs(value: Any, what: str) -> np.ndarray:
    try:
        return as_array(value, what=what)
    except NotNumeric as exc:
        raise StudentError(str(exc), kind=StudentErrorKind.BROKEN) from None


# A state: key -> (shape, dtype, values as float64 or None); from the kernel's rows or the file's entries
State = dict[str, tuple[tuple[int, ...] | None, str, np.ndarray | None]]


def _state(rows: Any) -> State:
    state: State = {}
    for row in rows if isinstance(rows, (list, tuple)) else []:
        if isinstance(row, (list, tuple)) and len(row) == 4:
            key, shape, dtype, values = row
            shape = tuple(int(n) for n in shape) if isinstance(shape, (list, tuple)) else None
            values = values if isinstance(values, np.ndarray) and values.shape == shape else None
            state[str(key)[:200]] = (shape, str(dtype)[:40], values)
    return state


def saved_model(ctx: CheckContext) -> dict:
    """build_model(), weights moved, its state taken, then saved with save_model into the exchange; the file
    opened by the grader in a process that never ran student code (once per submission)."""

    def run() -> dict:
        images = mnist_like(ctx.rng("saved-model"), N_IMAGES)
        folder = ctx.sandbox.new_output_dir("saved-model")  # the exchange: it outlives the kernel
        request = SaveModel(factory="build_model", saver="save_model", path=str(folder / "model.pt"),
                            seed=ctx.seed, images=images)
        built = _answer(ctx.run_child("persist", "build", request, what="build_model"),
                        ("is_module", "type", "style"), "build_model")
        if built["is_module"] is not True:
            raise StudentError(f"build_model returned a {str(built['type'])[:60]}, not an nn.Module",
                               kind=StudentErrorKind.EXCEPTION)
        answer = _answer(ctx.run_child("persist", "save", request, what="save_model"),
                         ("style", "outputs", "state"), "save_model")
        limits = ctx.sandbox.limits  # None where a student's own check runs it: no sandbox there
        file = read_saved_file(ctx.sandbox.exchange_fd, f"{folder.name}/model.pt",
                               memory_mb=limits.memory_mb if limits else None)
        return {"images": images, "path": request.path, "style": str(answer["style"]),
                "outputs": _outputs(answer["outputs"], "the saved model's outputs"),
                "state": _state(answer["state"]), "file": file,
                "file_state": _state(file.entries) if file.entries is not None else None}

    return ctx.memo("saved-model", run)


def _described(state: State) -> dict[str, str]:
    return {key: f"{shape} {dtype}" if shape is not None else f"a {dtype}" for key, (shape, dtype, _) in state.items()}


def _entry_table(held: dict[str, str], model: dict[str, str]) -> dict:
    keys = list(dict.fromkeys([*model, *held]))[:SHOWN_ENTRIES]
    return {"title": "What the file holds", "columns": ["key", "in the file", "in the model's state_dict"],
            "rows": [[key, held.get(key, "—"), model.get(key, "—")] for key in keys]}


def _largest_difference(found: State, expected: State) -> float | None:
    """The largest absolute difference between two states of the same keys and shapes (None: not comparable)."""
    if set(found) != set(expected):
        return None
    worst = 0.0
    for key, (_shape, _, values) in expected.items():
        other = found[key][2]
        if values is None or other is None or other.shape != values.shape:
            return None
        if values.size:
            worst = max(worst, float(np.nanmax(np.abs(other - values))) if np.isfinite(other).all() else np.inf)
    return worst


def _in_file(file: SavedFile, loaded: State) -> State | None:
    """The file's tensors under the loaded model's keys: at the top of the file, or under one prefix (a
    checkpoint's "state_dict."); None when the file holds no such tensors."""
    tensors = _state(file.tensors)
    if not loaded or not tensors:
        return None
    for prefix in dict.fromkeys(path[: len(path) - len(key)] for path in tensors for key in loaded
                                if path.endswith(key)):
        found = {key: tensors[prefix + key] for key in loaded if prefix + key in tensors}
        if len(found) == len(loaded):
            return found
    return None


def check_save_format(ctx: CheckContext) -> Outcome:
    saved = saved_model(ctx)
    file: SavedFile = saved["file"]
    if not file.exists:
        found = "no file" if file.error == NO_FILE else f"nothing the grader opens ({file.error})"
        return Outcome.failed(f"save_model(model, path) wrote {found} at the path it was given: write it there "
                              "with torch.save(model.state_dict(), path)")
    if not file.opened:
        return Outcome.failed(f"torch.load(path, weights_only=True) refuses the file save_model wrote: "
                              f"{file.error[:300]}. Saving the whole model pickles its Python class; save "
                              "model.state_dict() instead, a dict of tensors")
    model_state, file_state = saved["state"], saved["file_state"]
    if file_state is None:
        return Outcome.partial(FORMAT_PARTIAL, f"the file opens safely but holds a {file.kind}, not a state_dict: "
                                               "save model.state_dict()")
    held, model = _described(file_state), _described(model_state)
    details = {"table": _entry_table(held, model)} if held or model else {}
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
    difference = _largest_difference(file_state, model_state)
    if difference != 0:
        return Outcome.partial(FORMAT_PARTIAL, "the file holds a state_dict of the right keys and shapes, but not the "
                                               "weights of the model save_model was given: save that model's "
                                               "state_dict", max_difference=difference, **details)
    return Outcome.passed(f"the file is a plain state_dict ({len(held)} tensors with the model's keys, shapes and "
                          "values) that opens with torch.load(path, weights_only=True)", **details)


def loaded_model(ctx: CheckContext, saved: dict) -> tuple[np.ndarray, State]:
    """load_model(path) in a fresh kernel that ran the notebook again: its outputs and its state (once)."""

    def run() -> tuple[np.ndarray, State]:
        ctx.restart_kernel()
        request = LoadModel(loader="load_model", path=saved["path"], seed=ctx.seed + 1,
                            images=saved["images"], style=saved["style"])
        answer = _answer(ctx.run_child("persist", "load", request, what="load_model"), ("outputs", "state"),
                         "load_model")
        return _outputs(answer["outputs"], "the loaded model's outputs"), _state(answer["state"])

    return ctx.memo("loaded-model", run)


def check_load_roundtrip(ctx: CheckContext) -> Outcome:
    saved = saved_model(ctx)
    expected = saved["outputs"]
    found, state = loaded_model(ctx, saved)
    if found.shape != expected.shape:
        return Outcome.failed(f"the loaded model's outputs have shape {found.shape}; the saved model's "
                              f"{expected.shape}: load_model should build the same network and load the weights")
    keep = slice(0, 2000)
    details = {"scatter": {"x": np.round(expected.reshape(-1)[keep], 5).tolist(),
                           "y": np.round(np.nan_to_num(found, nan=0.0, posinf=1e6, neginf=-1e6).reshape(-1)[keep],
                                         5).tolist(),
                           "x_label": "saved model's output", "y_label": "loaded model's output", "diagonal": True}}
    if not np.allclose(found, expected, rtol=OUTPUT_RTOL, atol=0.0):
        difference = float(np.nanmax(np.abs(found - expected))) if np.isfinite(found).any() else float("inf")
        return Outcome.failed(f"in a fresh kernel, load_model(path) gives other outputs than the saved model (they "
                              f"differ by up to {difference:.3g}): build a new model with build_model() and "
                              "load_state_dict(torch.load(path)) into it", max_difference=difference, **details)
    # The same outputs are not enough: a model whose output ignores its weights gives them from any weights.
    # The loaded model must hold the weights the file holds, as the grader read them (a kernel could report
    # anything about a file; it cannot change what the grader reads in it).
    reference = _in_file(saved["file"], state)
    if reference is None:
        return Outcome.failed("load_model(path) gives the saved model's outputs, but the grader checks a round trip "
                              "against the weights it reads in the saved file, and it finds none there it can "
                              "open (torch.load(path, weights_only=True)): save model.state_dict()", **details)
    difference = _largest_difference(state, reference)
    if difference != 0:
        how = (f"differ by up to {difference:.3g}" if difference is not None
               else "do not even have the same keys and shapes")
        return Outcome.failed(f"in a fresh kernel, load_model(path) gives the saved model's outputs, but its weights "
                              f"are not the saved ones (they {how}): load the saved state_dict into the model",
                              max_difference=difference, **details)
    return Outcome.passed(f"in a fresh kernel, load_model(path) gives the saved model's weights and its outputs on "
                          f"the grader's {N_IMAGES} images", **details)


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
