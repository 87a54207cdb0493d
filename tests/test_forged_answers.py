"""Whatever the kernel answers, a check fails with a message: it never "crashes" (blaming the grader).

Every value the exchange can deliver (see grader.sandbox.exchange: JSON scalars, strings, lists, tuples,
dicts keyed by strings or numbers, numeric and text arrays of any shape, unsupported objects) is
sent as the answer to every question every check of every assignment asks, without a kernel.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import assignment
from grader.checks.context import remembered
from grader.errors import StudentError
from grader.grading.pipeline import run_check
from grader.sandbox.exchange import Unsupported
from grader.states import StudentErrorKind

FORGED = [
    None, True, 0, -1, 2 ** 62, 1e308, math.nan, -math.inf, "", "x" * 10_000, "build_model",
    [], [[[[1.0]]]], (1.0, 2.0, 3.0), (math.nan, math.nan), [None, "a"],
    {}, {1: 2.0, "a1": 1.0}, {"a1": "x", "b1": None, "a2": {}, "b2": "s"}, {None: 1, 2.5: [1]},
    {"a1": np.zeros(80), "b1": np.zeros(80), "a2": np.zeros(80), "b2": np.zeros((2, 2))},
    {"ok": 1, "error": 2}, {"history": {"train_loss": "x"}, "test_outputs": [np.zeros((3, 3))]},
    {"is_module": True, "layers": [{"type": "Linear", "in_features": "x", "params": -5}, 7],
     "total_params": math.nan, "input_style": "flat", "output_shape": [None, "10"]},
    np.zeros(0), np.zeros((1000, 100)), np.array([np.inf, -np.inf, np.nan]), np.array(["a", "b"]),
    np.array(3.0), np.array([True, False]), np.zeros((2, 0, 3)), np.full(2, 2 ** 62, dtype=np.int64),
    Unsupported("object", "<object at 0x0>"),
]


class ForgingContext:
    """A CheckContext whose kernel answers every question with the same forged value."""

    def __init__(self, answer, *, seed: int, resources=None):
        self.answer = answer
        self.seed = seed
        self.device = "cpu"
        self.resources = resources
        self.trainers = None
        self.timings: dict[str, float] = {}
        self._memo: dict = {}

    def call(self, name, *args, **kwargs):
        return self.answer

    def call_many(self, calls, *, keep_going=False, timeout_s=None):
        return [self.answer for _ in calls]

    def get(self, name):
        return self.answer

    def run_child(self, module, function, payload, *, what, timeout_s=None):
        return self.answer

    def shared_file(self, name):
        raise StudentError("no files here", kind=StudentErrorKind.BROKEN)

    def training_setup(self):
        from grader.ml.training import TrainingSetup

        return TrainingSetup(seed=self.seed)

    def rng(self, key):
        return np.random.default_rng([self.seed, len(key)])

    def memo(self, key, compute):
        return remembered(self._memo, key, compute)


@pytest.fixture(scope="module")
def resources(tmp_path_factory):
    """Each assignment's data, loaded once (the model assignments skip without their datasets)."""
    from conftest import data_root
    from grader.course.assignment import ResourceRequest
    from grader.ml.datasets import DatasetMissing

    loaded = {}

    def load(spec):
        if spec.resources is None:
            return None
        if spec.id not in loaded:
            try:
                loaded[spec.id] = spec.resources(ResourceRequest(data_root(), tmp_path_factory.mktemp("cache"), "cpu"))
            except DatasetMissing as exc:
                pytest.skip(str(exc))
        return loaded[spec.id]

    return load


@pytest.mark.parametrize("assignment_id", ["gradient-descent", "mlp-1500", "deep-mlp", "regression-vs-forest"])
@pytest.mark.parametrize("index", range(len(FORGED)))
def test_no_forged_answer_crashes_a_check(assignment_id, index, resources):
    spec = assignment(assignment_id)
    context = ForgingContext(FORGED[index], seed=spec.seed, resources=resources(spec))
    for check in spec.checks:
        result = run_check(check, context)
        assert "crashed" not in result.message, (check.id, result.message)
        if assignment_id == "gradient-descent":  # elsewhere a forged number can be a fine LEARNING_RATE
            assert result.score == 0, (check.id, result.score, result.message)
