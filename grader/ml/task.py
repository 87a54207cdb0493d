"""What a model assignment asks for, and the arrays its model is trained and tested on."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grader.files import write_atomically
from grader.locations import cache_dir

IMAGE_STYLES = ("image", "flat")  # (B, 1, 28, 28) or (B, 784); the grader tries them in this order
FEATURE_STYLES = ("features",)  # (B, n_features)


@dataclass(frozen=True)
class ModelTask:
    # "classification": n_outputs class scores; "binary": one output, a probability (a sigmoid in the
    # model: binary cross-entropy on it) or a logit (binary cross-entropy with logits), told apart by
    # probing the rebuild; "regression": one value
    kind: str  # "classification" | "binary" | "regression"
    n_outputs: int
    factory: str = "build_model"
    factory_args: tuple = ()
    max_params: int = 50_000_000
    max_train_seconds: float = 900.0
    input_styles: tuple[str, ...] = IMAGE_STYLES
    max_activation_mb: int = 2048  # one training batch's forward activations, estimated before training
    # the grader trains only a chain of standard layers from the input to the output
    # (grader.ml.graph.chain_problem), so that nothing it trains can hold a computed answer behind a gate;
    # a course whose models need branches (residual blocks, say) turns it off and loses that guarantee
    layers_only: bool = True

    @property
    def call(self) -> str:
        """The call the grader makes, as messages name it: build_model(), build_regressor(8), build_model("xor")."""
        args = ", ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in self.factory_args)
        return f"{self.factory}({args})"


@dataclass(frozen=True)
class TaskData:
    """Arrays for one task. test_y never leaves the grader: the child sees no test data at all,
    the trainer sees test inputs only."""

    name: str
    version: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...] = ()
    # more inputs the trainer runs the trained model on, after its last epoch (a grid of points for the
    # feedback's picture of the model's estimate, say); their outputs come back as TrainingRun.extra_outputs
    extra_x: np.ndarray | None = field(default=None, compare=False, repr=False)
    _files: dict = field(default_factory=dict, compare=False, repr=False)

    def head(self, rows: int) -> TaskData:
        """The same task on the first `rows` training rows (a preview's training)."""
        return TaskData(name=self.name, version=f"{self.version}-head-{rows}", train_x=self.train_x[:rows],
                        train_y=self.train_y[:rows], test_x=self.test_x, test_y=self.test_y, classes=self.classes,
                        extra_x=self.extra_x)

    def files(self) -> dict[str, Path]:
        """The arrays the trainer reads (never test_y), in the grader's cache under a digest of their contents:
        written once, shared by every process (a batch's workers, the next run), and left behind by none of
        them, however they end."""
        if not self._files:
            keys = ("train_x", "train_y", "test_x") + (("extra_x",) if self.extra_x is not None else ())
            arrays = {key: np.ascontiguousarray(getattr(self, key)) for key in keys}
            folder = cache_dir() / "task-data" / _digest(arrays)
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            for key, array in arrays.items():
                self._files[key] = _saved(array, folder / f"{key}.npy")
        return dict(self._files)


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for key, array in arrays.items():
        digest.update(f"{key} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:32]


def _saved(array: np.ndarray, path: Path) -> Path:
    """`path`, holding `array`; written whole or not at all (a reader in another process never sees half)."""
    if not path.exists():
        stream = io.BytesIO()
        np.save(stream, array, allow_pickle=False)
        write_atomically(path, stream.getvalue())
    return path


def model_inputs(array: np.ndarray, style: str) -> np.ndarray:
    """What a model is fed: uint8 images scaled to [0, 1] (as torchvision's ToTensor does) in the shape of
    the style; feature rows as float32."""
    if array.dtype != np.uint8:
        return np.asarray(array, dtype=np.float32)
    scaled = array.astype(np.float32) / np.float32(255.0)
    if style == "flat":
        return scaled.reshape(len(scaled), -1)
    return scaled.reshape(len(scaled), 1, *scaled.shape[1:])


def image_task_data(images, *, seed: int) -> TaskData:
    """An image dataset; its test set in a secret order, so that no order carries labels."""
    order = np.random.default_rng([seed, 7919]).permutation(len(images.test_labels))
    return TaskData(name=images.name, version=images.version, train_x=images.train_images,
                    train_y=images.train_labels.astype(np.int64), test_x=images.test_images[order],
                    test_y=images.test_labels[order].astype(np.int64), classes=images.classes)


def tabular_task_data(table, *, seed: int, test_size: float = 0.33, random_state: int = 42) -> TaskData:
    """sklearn's train_test_split, then StandardScaler fitted on the training split only.

    The trainer gets float32 features and training targets; the test rows go in a secret
    order (as image tasks do) and their targets stay in test_y, in the grader.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    train_x, test_x, train_y, test_y = train_test_split(table.features, table.target, test_size=test_size,
                                                        random_state=random_state)
    scaler = StandardScaler().fit(train_x)
    order = np.random.default_rng([seed, 7919]).permutation(len(test_y))
    return TaskData(name="california-housing", version=f"{table.version}-split-{test_size:g}-{random_state}",
                    train_x=scaler.transform(train_x).astype(np.float32), train_y=train_y.astype(np.float32),
                    test_x=scaler.transform(test_x)[order].astype(np.float32),
                    test_y=np.asarray(test_y, dtype=np.float64)[order])
