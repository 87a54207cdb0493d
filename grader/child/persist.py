"""Save the student's model with their own function, and load it back. Runs in the child.

The grader hands over a path in the exchange directory, which outlives a
kernel restart, and never opens the file itself: what a student's code wrote
may be a pickle that runs code when it is loaded. The file is opened here, in
the sandbox, with `torch.load(weights_only=True)` only, and what goes back is
plain data: what the file holds (keys, shapes, dtypes), how it compares with
the model's own state_dict, and the model's outputs on the grader's inputs.
The grader compares the outputs of the saved model and of the loaded one, in
its own process.

Three entry points, one question each, so that an error names the student's
function that raised it: `build` (build_model), `save` (save_model), and, in a
fresh kernel, `load` (load_model).
"""

import os
import re

import numpy as np
import torch

from . import protocol, wire
from .model import _seed
from .probe import _defined, _error, _write

MAX_ENTRIES = 1000  # a state_dict of a course model has a few dozen
SHIFT = 0.05  # the grader's stand-in for training: every weight moves, so a fresh build is not the saved model


def build(namespace, in_dir, out_dir):
    """factory() once: is it a module, and which input shape does it take."""
    request = protocol.from_wire(protocol.SaveModel, wire.load(in_dir))
    try:
        model = _built(namespace, request)
        if isinstance(model, torch.nn.Module):
            style, _ = _outputs(model, request.images)
            answer = {"ok": {"is_module": True, "type": type(model).__name__, "style": style}}
        else:
            answer = {"ok": {"is_module": False, "type": type(model).__name__, "style": ""}}
    except BaseException as exc:  # noqa: BLE001 - the student's errors are the answer
        answer = _error(exc, request.factory)
    _write(answer, out_dir)


def save(namespace, in_dir, out_dir):
    """Build, shift the weights, record the outputs, saver(model, path), then open the file."""
    request = protocol.from_wire(protocol.SaveModel, wire.load(in_dir))
    try:
        model = _built(namespace, request)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{request.factory}() returned a {type(model).__name__}, not an nn.Module")
        _shift(model, request.seed)
        style, outputs = _outputs(model, request.images)
        expected = _entries(model.state_dict())
        tensors = {k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}
        _defined(namespace, request.saver)(model, request.path)
        answer = {"ok": {"style": style, "outputs": outputs, "model_entries": expected,
                         "file": _inspect(request.path, tensors)}}
    except BaseException as exc:  # noqa: BLE001
        answer = _error(exc, request.saver)
    _write(answer, out_dir)


def load(namespace, in_dir, out_dir):
    """loader(path) and its outputs on the grader's inputs, in the saved model's input style."""
    request = protocol.from_wire(protocol.LoadModel, wire.load(in_dir))
    try:
        _seed(request.seed)
        model = _defined(namespace, request.loader)(request.path)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"{request.loader}(path) returned a {type(model).__name__}, not an nn.Module")
        _, outputs = _outputs(model, request.images, style=request.style)
        answer = {"ok": {"type": type(model).__name__, "outputs": outputs}}
    except BaseException as exc:  # noqa: BLE001
        answer = _error(exc, request.loader)
    _write(answer, out_dir)


# --------------------------------------------------------------------------


def _built(namespace, request):
    factory = _defined(namespace, request.factory)
    _seed(request.seed)
    return factory()


def _shift(model, seed):
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.add_((SHIFT * noise).to(parameter.dtype))


def _outputs(model, images, *, style=None):
    """(style, outputs as float64) in evaluation mode: images (N, 1, 28, 28) first, else flat (N, 784)."""
    model.eval()
    images = np.asarray(images, dtype=np.float32)
    first = None
    for candidate in ([style] if style else ["image", "flat"]):
        x = torch.from_numpy(images if candidate == "image" else images.reshape(len(images), -1))
        try:
            with torch.no_grad():
                out = model(x)
        except Exception as exc:  # noqa: BLE001 - try the other shape; the first error is the one reported
            first = first or exc
            continue
        return candidate, _first_tensor(out).detach().to(torch.float64).cpu().numpy()
    raise first


def _first_tensor(out):
    """The logits of a forward that returns a tuple (logits, probs, pred), or the output itself."""
    while isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not torch.is_tensor(out):
        raise TypeError(f"the model's forward returned a {type(out).__name__}, not a tensor")
    return out


def _entries(state):
    """[[key, shape, dtype], ...] of a mapping; a value that is not a tensor has shape None and its type."""
    rows = []
    for key, value in list(state.items())[:MAX_ENTRIES]:
        if torch.is_tensor(value):
            rows.append([str(key), list(value.shape), str(value.dtype).replace("torch.", "")])
        else:
            rows.append([str(key), None, type(value).__name__])
    return rows


def _inspect(path, tensors):
    """What the file at `path` holds, opened with weights_only=True and nothing else."""
    if not os.path.isfile(path):
        return {"exists": False}
    report = {"exists": True, "size": os.path.getsize(path)}
    try:
        held = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - why it cannot be opened safely is the answer
        return {**report, "weights_only": False, "error": _why(exc)}
    report.update(weights_only=True, kind=type(held).__name__)
    if isinstance(held, dict):
        report["entries"] = _entries(held)
        report["max_difference"] = _difference(held, tensors)
    return report


def _why(exc):
    text = str(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return f"it holds a pickled {unsupported.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1][:300] if lines else ''}"


def _difference(held, tensors):
    """The largest absolute difference between the file's tensors and the model's (None if they do not match)."""
    if set(map(str, held)) != set(tensors):
        return None
    worst = 0.0
    for key, value in held.items():
        mine = tensors[str(key)]
        if not torch.is_tensor(value) or value.shape != mine.shape:
            return None
        if value.numel():
            worst = max(worst, float((value.detach().to(torch.float64) - mine.to(torch.float64)).abs().max()))
    return worst
