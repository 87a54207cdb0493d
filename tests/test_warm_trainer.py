"""Trainers started before they are needed (grader/ml/training.py): used once, never left behind."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from grader.ml.training import TrainingSetup, WaitingTrainers
from grader.sandbox.trusted import finish_trusted


def test_a_prepared_trainer_is_the_one_training_takes_and_is_used_once():
    setup = TrainingSetup(threads=1, memory_mb=2048, seed=7)
    trainers = WaitingTrainers()
    trainers.prepare(setup)
    waiting = trainers._waiting[setup]
    trainers.prepare(setup)  # one is waiting already: no second
    assert trainers._waiting[setup] is waiting
    assert trainers.take(setup) is waiting and setup not in trainers._waiting
    other = trainers.take(setup)  # none waiting: a new one
    assert other is not waiting
    for process in (waiting, other):
        done = finish_trusted(process, stdin="\n", stall_s=60)  # an empty line: not needed after all
        assert done.returncode == 0, done.stderr


def test_closing_the_owner_kills_its_waiting_trainer():
    trainers = WaitingTrainers()
    trainers.prepare(TrainingSetup())
    (process,) = trainers._waiting.values()
    trainers.close()
    assert process.poll() is not None and trainers._waiting == {}


@pytest.mark.parametrize("ending", ["returns", "killed"])
def test_an_unused_trainer_dies_with_the_grader_however_it_ends(ending):
    # without an exit hook: its job comes on a pipe from the grader, and a pipe whose writer is gone
    # (an unclosed owner at exit, or a grader killed outright) reads as "no job"
    script = ("import os, signal\nfrom grader.ml import training\n"
              "trainers = training.WaitingTrainers()\ntrainers.prepare(training.TrainingSetup())\n"
              "print(next(iter(trainers._waiting.values())).pid, flush=True)\n"
              + ("os.kill(os.getpid(), signal.SIGKILL)\n" if ending == "killed" else ""))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    pid = int(done.stdout.split()[-1])
    deadline = time.monotonic() + 120  # it reads its pipe once torch is imported: slow on a busy machine
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_task_data_is_written_once_to_the_cache_and_shared(tmp_path, monkeypatch):
    # it was one temporary folder per process, removed at its exit: a batch's forked workers and killed Dask
    # workers never exit that way, and left a copy of the training set each in /tmp
    import tempfile

    import numpy as np

    from grader.ml.task import TaskData

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def task(offset: float) -> TaskData:
        x = np.arange(12, dtype=np.float32).reshape(6, 2) + offset
        return TaskData(name="t", version="1", train_x=x, train_y=np.arange(6), test_x=x[:2], test_y=np.arange(2))

    first, again, other = task(0).files(), task(0).files(), task(1).files()
    assert first == again and first["train_x"] != other["train_x"]
    assert set(first) == {"train_x", "train_y", "test_x"}  # never the test labels
    assert np.array_equal(np.load(first["test_x"]), task(0).test_x)
    assert first["train_x"].parent.parent == tmp_path / "cache" / "grader" / "task-data"
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not [p for p in first["train_x"].parent.iterdir() if p.name.startswith(".")]  # no partial file left
