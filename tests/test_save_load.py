"""The save-load assignment graded end to end: a plain state_dict on disk, loaded back in a fresh kernel.

The grader's process never unpickles the student's file: it is opened in the sandbox with
torch.load(weights_only=True), and only plain data comes back.
"""

from __future__ import annotations

import builtins
import dataclasses
import pickle

import pytest

from conftest import SOLUTIONS, TEMPLATES, assignment, check, grade, load, save, scores, with_definition

SOLUTION = SOLUTIONS / "save_load.ipynb"
FULL = 10.0
SAVE_LOAD = ("save-format", "load-roundtrip")

WHOLE_MODEL_PICKLED = '''
def save_model(model, path):
    torch.save(model, path)


def load_model(path):
    return torch.load(path, weights_only=False)
'''
CHECKPOINT_DICT = '''
def save_model(model, path):
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, path)


def load_model(path):
    model = build_model()
    model.load_state_dict(torch.load(path)["state_dict"])
    return model
'''
CACHED_IN_MEMORY = '''
_SAVED = {}


def save_model(model, path):
    _SAVED[path] = model  # no file: the model only lives in this kernel's memory


def load_model(path):
    return _SAVED[path]
'''
REBUILT_UNTRAINED = '''
def save_model(model, path):
    torch.save(model.state_dict(), path)


def load_model(path):
    return build_model()  # a new model, never given the saved weights
'''
PICKLE_THAT_RUNS_CODE = '''
class Payload:
    def __reduce__(self):
        return (exec, ("import builtins; builtins.GRADER_SAVE_LOAD_PWNED = True",))


def save_model(model, path):
    torch.save(Payload(), path)  # a file that runs code when it is unpickled


def load_model(path):
    return torch.load(path, weights_only=False)  # runs the payload, here in the sandbox: the student's own risk
'''


@pytest.fixture(scope="module")
def spec():
    return assignment("save-load", cell_timeout_s=30, total_timeout_s=120)


@pytest.fixture(scope="module")
def solution():
    return load(SOLUTION)


def test_reference_solution_earns_full_marks(spec, options):
    result = grade(SOLUTION, spec, options)
    assert result.score == result.max_score == FULL, [c.message for c in result.checks if c.status != "passed"]
    assert result.execution["problems"] == [] and result.execution["demo_cells_skipped"]
    # load_model ran in a fresh kernel: the grader's own doing, which the page does not call a restart
    assert (result.execution["kernel_restarts"], result.execution["fresh_kernels"]) == (0, 1)
    from grader.reports.html import execution_notes

    notes = " ".join(execution_notes(result.execution))
    assert "restarted" not in notes and "ran the notebook again in a fresh kernel (not a problem)" in notes
    demos = result.execution["demo_cells_skipped"]
    assert f"Cells tagged as demos were not run: {', '.join(map(str, demos))}." in notes  # counted from 1, once
    roundtrip = check(result, "load-roundtrip").details["scatter"]
    assert roundtrip["x"] == roundtrip["y"] and len(roundtrip["x"]) == 16 * 10 and roundtrip["diagonal"] is True
    table = check(result, "save-format").details["table"]
    assert [row[0] for row in table["rows"]] == ["1.weight", "1.bias", "3.weight", "3.bias"]
    assert all(row[1] == row[2] for row in table["rows"])
    assert check(result, "normalize-range").details["found"] == [-1.0, 1.0]


def test_template_earns_zero(spec, options):
    result = grade(TEMPLATES / "save_load.ipynb", spec, options)
    assert result.status == "graded" and result.score == 0
    assert all(c.status == "failed" for c in result.checks)
    assert "normalize is not implemented yet" in check(result, "normalize-values").message
    assert "build_model is not implemented yet" in check(result, "save-format").message


def test_pickling_the_whole_model_and_a_flipped_normalisation_earn_part(spec, options, solution, tmp_path):
    notebook = with_definition(solution, "save_model", WHOLE_MODEL_PICKLED)
    notebook = with_definition(notebook, "normalize", "def normalize(images):\n    return 1 - 2 * images\n")
    result = grade(save(notebook, tmp_path / "whole.ipynb"), spec, options)
    # the round trip is checked against the weights the grader reads in the file, and it opens no pickle
    assert scores(result) == {"normalize-range": 1, "normalize-values": 0, "save-format": 0, "load-roundtrip": 0}
    assert "finds none there it can open" in check(result, "load-roundtrip").message
    message = check(result, "save-format").message
    assert "weights_only=True) refuses" in message and "torch.nn.modules.container.Sequential" in message
    assert "save model.state_dict()" in message


def test_a_checkpoint_dict_and_pixels_left_in_0_1_earn_part(spec, options, solution, tmp_path):
    notebook = with_definition(solution, "save_model", CHECKPOINT_DICT)
    notebook = with_definition(notebook, "normalize", "def normalize(images):\n    return images\n")
    result = grade(save(notebook, tmp_path / "checkpoint.ipynb"), spec, options)
    assert scores(result) == {"normalize-range": 0, "normalize-values": 0, "save-format": 1, "load-roundtrip": 4}
    assert "not the model's state_dict's (it has epoch, state_dict)" in check(result, "save-format").message
    assert "onto [0, 1]; it should give [-1, 1]" in check(result, "normalize-range").message


def test_a_model_kept_in_memory_earns_nothing(spec, options, solution, tmp_path):
    """The cheat: save_model keeps the object in a global and load_model returns it. The fresh kernel that
    runs load_model has nothing in memory, and there is no file."""
    result = grade(save(with_definition(solution, "save_model", CACHED_IN_MEMORY), tmp_path / "cache.ipynb"),
                   spec, options)
    assert all(scores(result)[c] == 0 for c in SAVE_LOAD) and result.score == FULL - 7
    assert "wrote no file at the path it was given" in check(result, "save-format").message
    assert "load_model raised KeyError" in check(result, "load-roundtrip").message


def test_a_rebuilt_untrained_model_is_not_the_saved_one(spec, options, solution, tmp_path):
    only_save_load = dataclasses.replace(spec, checks=tuple(c for c in spec.checks if c.id in SAVE_LOAD))
    result = grade(save(with_definition(solution, "save_model", REBUILT_UNTRAINED), tmp_path / "rebuilt.ipynb"),
                   only_save_load, options)
    assert scores(result) == {"save-format": 3, "load-roundtrip": 0}
    assert "gives other outputs than the saved model" in check(result, "load-roundtrip").message


def test_a_pickle_that_runs_code_is_never_unpickled_by_the_grader(spec, options, solution, tmp_path, monkeypatch):
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("the grader's process unpickled something")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    only_save_load = dataclasses.replace(spec, checks=tuple(c for c in spec.checks if c.id in SAVE_LOAD))
    notebook = with_definition(solution, "save_model", PICKLE_THAT_RUNS_CODE)
    result = grade(save(notebook, tmp_path / "payload.ipynb"), only_save_load, options)
    assert not hasattr(builtins, "GRADER_SAVE_LOAD_PWNED")
    assert scores(result) == {"save-format": 0, "load-roundtrip": 0}
    assert "refuses the file save_model wrote: it holds a pickled exec" in check(result, "save-format").message
    assert "load_model(path) returned a NoneType, not an nn.Module" in check(result, "load-roundtrip").message


def test_grader_check_runs_the_normalisation_checks_and_leaves_the_rest_for_grading(tmp_path):
    import json
    import shutil

    from grader.cli import main

    shutil.copy(TEMPLATES / "save_load.checks.json", tmp_path)
    shutil.copy(SOLUTION, tmp_path / "save_load.ipynb")
    assert main(["check", str(tmp_path / "save_load.ipynb"), "--out", str(tmp_path / "out")]) == 0
    checked = {c["id"]: c["status"] for c in json.loads((tmp_path / "out" / "result.json").read_text())["checks"]}
    assert checked == {"normalize-range": "passed", "normalize-values": "passed", "save-format": "skipped",
                       "load-roundtrip": "skipped"}


# --------------------------------------------------------------------------
# The grader computes what it compares: nothing the kernel reports about the file counts


PATCHED_PERSIST = '''
def save_model(model, path):
    pass  # a stub: no file


def load_model(path):
    return build_model()


import grader_child.persist as _persist

_persist._state = lambda model: [["0.weight", [2], "float32", None]]  # "saved" and "loaded" alike
_persist._outputs = lambda model, images, style=None: ("image", __import__("numpy").zeros((len(images), 10)))
_persist._inspect = lambda path, tensors: {"exists": True, "weights_only": True, "kind": "dict",
                                           "entries": [], "max_difference": 0.0}
'''
WEIGHTS_IGNORED = '''
class Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(784, 10)

    def forward(self, x):
        return 0 * self.layer(x.flatten(1)) + 1.0  # the same output whatever the weights


def build_model():
    return Constant()
'''


def test_stubs_that_patch_the_grader_s_child_code_earn_only_the_normalisation(spec, options, solution, tmp_path):
    result = grade(save(with_definition(solution, "save_model", PATCHED_PERSIST), tmp_path / "patched.ipynb"),
                   spec, options)
    assert scores(result) == {"normalize-range": 1, "normalize-values": 2, "save-format": 0, "load-roundtrip": 0}
    assert "wrote no file at the path it was given" in check(result, "save-format").message


def test_a_model_whose_output_ignores_its_weights_does_not_pass_the_round_trip(spec, options, solution, tmp_path):
    notebook = with_definition(solution, "build_model", WEIGHTS_IGNORED)
    notebook = with_definition(notebook, "save_model", REBUILT_UNTRAINED)  # load_model = build_model
    result = grade(save(notebook, tmp_path / "constant.ipynb"), spec, options)
    assert scores(result) == {"normalize-range": 1, "normalize-values": 2, "save-format": 3, "load-roundtrip": 0}
    assert "its weights are not the saved ones" in check(result, "load-roundtrip").message
