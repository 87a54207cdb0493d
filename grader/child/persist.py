"""Save the student's model with their own function, and load it back. Runs in the child.

The grader hands over a path in the exchange directory, which outlives a
kernel restart. What goes back is plain data: the model's state (every entry
of its state_dict, as arrays) taken before save_model sees the model, and
after load_model returns it, and its outputs on the grader's inputs. Nothing
here judges anything, and nothing here opens the saved file: the grader opens
it in a process that never ran student code (grader/ml/state_file.py) and
compares keys, shapes and values in its own process, so a notebook that
patches this module can only misreport its own model, never the file.

Three entry points, one question each, so that an error names the student's
function that raised it: `build` (build_model), `save` (save_model), and, in a
fresh kernel, `load` (load_model).
"""

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
    except BaseException as exc:  # the student's errors are the answer
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
        state = _state(model)  # before save_model can touch the model
        _defined(namespace, request.saver)(model, request.path)
        answer = {"ok": {"style": style, "outputs": outputs, "state": state}}
    except BaseException as exc:
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
        answer = {"ok": {"type": type(model).__name__, "outputs": outputs, "state": _state(model)}}
    except BaseException as exc:
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
        except Exception as exc:  # try the other shape; the first error is the one reported
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


def _state(model):
    """The model's state_dict as [[key, shape, dtype, values as float64 or None], ...]."""
    rows = []
    for key, value in list(model.state_dict().items())[:MAX_ENTRIES]:
        if not torch.is_tensor(value):
            continue
        numeric = value.dtype.is_floating_point or value.dtype in (torch.int64, torch.int32, torch.int16,
                                                                   torch.int8, torch.uint8)
        values = value.detach().to(torch.float64).cpu().numpy() if numeric else None
        rows.append([str(key), list(value.shape), str(value.dtype).replace("torch.", ""), values])
    return rows
