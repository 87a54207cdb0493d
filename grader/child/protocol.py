"""Every request the grader sends into the kernel, as a small record of primitives and arrays.

Both sides use these: the grader builds a request and writes `to_wire()` with
grader.child.wire (JSON and pickle-free .npy); the child reads it back with
`from_wire`. Answers travel the other way as {"ok": value} or {"error": ...}
and are read by the grader's hardened reader (grader.sandbox.exchange), never here.
"""

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Prepare:
    """Run once in a fresh kernel before the student's first cell."""

    seed: int
    blocked_modules: tuple = ()
    block_reason: str = ""
    helpers: tuple = ()  # grader_child modules imported before any student code (they capture torch)


@dataclass(frozen=True)
class Call:
    """name(*args, **kwargs) in the student's namespace."""

    args: list = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Calls:
    """names[i](*calls[i].args, **calls[i].kwargs), one after another in one cell: a check's calls in one
    round trip to the kernel (grader_child.probe.calls)."""

    names: list
    calls: list  # of Call, as dicts
    keep_going: bool = False  # on past a call that raised (else the rest are left to the grader)


@dataclass(frozen=True)
class Trace:
    """Build the model with factory(*args) once, and describe it (grader_child.model)."""

    factory: str
    args: list
    max_params: int
    seed: int
    probes: dict  # input style -> array: the inputs the model's own forward pass is run on


@dataclass(frozen=True)
class SaveModel:
    """Build a model with factory(), shift its weights, save it with saver(model, path), open the file
    with torch.load(weights_only=True) and report what it holds (grader_child.persist)."""

    factory: str
    saver: str
    path: str  # in the exchange directory: it outlives a kernel restart
    seed: int
    images: object  # (N, 1, 28, 28) floats in [0, 1]: the inputs the model's outputs are reported on


@dataclass(frozen=True)
class LoadModel:
    """model = loader(path), in a fresh kernel, and its outputs on the same inputs (grader_child.persist)."""

    loader: str
    path: str
    seed: int
    images: object
    style: str  # "image" (N, 1, 28, 28) or "flat" (N, 784): how the saved model took its input


def to_wire(request):
    return asdict(request)


def from_wire(kind, data):
    return kind(**data)
