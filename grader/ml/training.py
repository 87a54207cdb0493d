"""The grader's side of a training run: the job it writes, the trainer it starts, the record it checks.

The trainer (grader/ml/trainer.py) runs in a process of its own that never ran
student code, on the rebuilt model; a long-lived one trains one job at a time and
many in turn, keeping the task's data in memory. Its answer is read as untrusted data all
the same, and the grader counts for itself: the epochs, the optimizer steps
every epoch must take, one set of test outputs before training and one after
each epoch (and, for a task with extra inputs, one set of outputs on them after
training). A run that does not match the budget the grader set is refused.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from grader.errors import GraderFailure, StudentError
from grader.ml.analysis import Analysis, analysis_from
from grader.ml.budget import Budget
from grader.ml.description import ModelDescription
from grader.ml.graph import ModelGraph, chain_problem
from grader.ml.task import ModelTask, TaskData
from grader.ml.trainer import JOB_DONE, WAIT_FOR_JOB
from grader.sandbox.exchange import ExchangeError, read_value
from grader.sandbox.limits import Limits, cpu_contended_now, submission_threads, trainer_waiting
from grader.sandbox.trusted import Stalled, run_job, start_trusted
from grader.states import StudentErrorKind

TRAINER_STALL_S = 300.0  # no CPU used at all for this long: the trainer hangs
TRAINER_START_CPU_S = 120.0  # what the trainer spends before training (imports, data), on top of the budget
JOBS_PER_TRAINER = 200  # a long-lived trainer is replaced after this many jobs: whatever it accumulates, bounded
JUDGED_LATELY_S = 60.0  # a trainer started this recently for its first job keeps the waiting chosen at its start


def max_cpu_seconds(task: ModelTask, setup: TrainingSetup) -> float:
    """The training run's CPU-time guard: the task's wall-clock allowance on an idle machine, on each of
    the trainer's threads. Far above what a model within the task's rules needs."""
    return task.max_train_seconds * max(1, setup.threads)


@dataclass(frozen=True)
class TrainingRun:
    epochs_run: int
    steps: int
    train_loss: tuple[float, ...]
    train_accuracy: tuple[float, ...]
    test_outputs: tuple[np.ndarray, ...]  # before training, then after each epoch
    stopped_early: str | None
    wall_s: float
    device: str
    budget: Budget
    extra_outputs: np.ndarray | None = None  # the trained model on TaskData.extra_x, when the task has any
    cpu_s: float = 0.0  # the trainer's CPU time (what the runaway guard counts), beside its wall time

    @property
    def final_outputs(self) -> np.ndarray:
        return self.test_outputs[-1]


@dataclass(frozen=True)
class TrainingSetup:
    """How the grader runs the trainer: where, with how many threads and how much memory."""

    device: str = "cpu"
    threads: int = 1
    memory_mb: int | None = None
    seed: int = 0


def training_setup(limits: Limits, *, threads: int | None, device: str, seed: int) -> TrainingSetup:
    """The trainer's setup for a submission with these limits: its share of the cores (as its sandbox's), its
    memory."""
    return TrainingSetup(device=device, threads=submission_threads(threads), memory_mb=limits.memory_mb, seed=seed)


def loss_kind(task: ModelTask, description: ModelDescription, budget: Budget) -> str:
    if task.kind == "regression":
        return f"regression-{budget.loss}"
    if task.kind == "binary":
        return f"binary-{description.output_kind or 'logit'}"
    return description.output_kind or "logits"


def not_trainable(description: ModelDescription, task: ModelTask, budget: Budget) -> str:
    """Why the grader will not train this model ("" when it will), in words a student can act on."""
    if not description.is_module:
        return f"{task.call} did not return a model"
    if description.unrebuildable:
        return f"the grader cannot rebuild the model: {description.unrebuildable}"
    if description.input_style is None:
        return "its forward pass failed on the grader's inputs"
    chain = chain_problem(description.graph) if task.layers_only and description.graph is not None else ""
    if chain:
        return chain
    needed_mb = description.activation_bytes * budget.batch_size * 3 / 2 ** 20
    if needed_mb > task.max_activation_mb:
        return (f"one training batch of {budget.batch_size} would need about {needed_mb:,.0f} MB for its "
                f"activations; the grader allows {task.max_activation_mb:,} MB (make the layers smaller)")
    return ""


def train(description: ModelDescription, task: ModelTask, data: TaskData, budget: Budget,
          setup: TrainingSetup, trainers: Trainers | None = None) -> TrainingRun:
    """Train the rebuild of the student's model with this budget, in one of `trainers` (or a trainer of
    its own); StudentError when it cannot be."""
    problem = not_trainable(description, task, budget)
    if problem:
        raise StudentError(f"the model was not trained: {problem}", kind=StudentErrorKind.EXCEPTION)
    if trainers is None:
        with Trainers() as own:
            return train(description, task, data, budget, setup, own)
    job = Path(tempfile.mkdtemp(prefix="grader-train-"))
    try:
        _write_job(job, description, task, data, budget, setup)
        answer = _job_answer(job, setup, trainers, max_cpu_s=max_cpu_seconds(task, setup) + TRAINER_START_CPU_S)
    finally:
        shutil.rmtree(job, ignore_errors=True)
    if isinstance(answer, dict) and "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {}
        raise StudentError(f"the model could not be trained: {error.get('type', 'Error')}: "
                           f"{str(error.get('message', ''))[:300]}", kind=StudentErrorKind.EXCEPTION)
    if not isinstance(answer, dict) or "ok" not in answer:
        raise GraderFailure("its training process gave no record")
    if isinstance(answer["ok"], dict) and answer["ok"].get("runaway"):
        # stopped for taking far longer than the budget implies: a partial run is never scored
        raise GraderFailure(f"its training run was stopped by the grader's runaway guard "
                            f"({str(answer['ok']['runaway'])[:300]})")
    return checked_run(answer["ok"], budget=budget, n_train=len(data.train_y), n_test=len(data.test_y),
                       n_outputs=task.n_outputs, n_extra=None if data.extra_x is None else len(data.extra_x))


def analyze_in_trainer(graph: ModelGraph, task: ModelTask, probes: dict[str, np.ndarray], setup: TrainingSetup,
                       trainers: Trainers | None = None) -> tuple[str, Analysis]:
    """Why the grader cannot rebuild the model ("" when it can), and what running its rebuild on the probe
    inputs shows (grader.ml.analysis), from a trainer: torch is imported there, not in the grader."""
    if trainers is None:
        with Trainers() as own:
            return analyze_in_trainer(graph, task, probes, setup, own)
    job = Path(tempfile.mkdtemp(prefix="grader-analyze-"))
    try:
        _write_analysis_job(job, graph, task, probes, setup)
        answer = _job_answer(job, setup, trainers, max_cpu_s=TRAINER_START_CPU_S)
    finally:
        shutil.rmtree(job, ignore_errors=True)
    if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
        error = answer["error"]
        raise GraderFailure(f"its model analysis failed: {str(error.get('type', 'Error'))[:100]}: "
                            f"{str(error.get('message', ''))[:300]}")
    found = answer.get("ok") if isinstance(answer, dict) else None
    if isinstance(found, dict) and isinstance(found.get("unrebuildable"), str):
        return found["unrebuildable"][:1000], Analysis(forward_errors={})
    try:
        return "", analysis_from(found["analysis"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise GraderFailure("its model analysis gave a malformed answer") from None


def _job_answer(job: Path, setup: TrainingSetup, trainers: Trainers, *, max_cpu_s: float) -> Any:
    """Run the job written in `job` in one of `trainers`; what it wrote back, as data."""
    trainer = trainers.take(setup)
    try:
        answered = run_job(trainer.process, f"{job}\n", done=JOB_DONE, stall_s=TRAINER_STALL_S, max_cpu_s=max_cpu_s)
    except Stalled as exc:
        trainer.close()
        raise GraderFailure(f"its training process was stopped by the grader's runaway guard ({exc})") from None
    try:
        return _answer(job, trainer)
    finally:
        if answered:
            trainers.give_back(setup, trainer)
        else:
            trainer.close()


@dataclass(eq=False)
class Trainer:
    """One trainer process, its messages kept in a file (many jobs' worth would fill a pipe)."""

    process: subprocess.Popen
    log: IO[bytes]
    spins: bool = False  # its threads spin a little before sleeping (limits.trainer_waiting)
    jobs: int = 0
    started: float = field(default_factory=time.monotonic)

    def judged_lately(self) -> bool:
        """Whether how its threads wait was chosen moments ago, for the job it is about to take: judging the
        machine again now would count the trainer's own imports and the kernel beside it as load."""
        return self.jobs == 0 and time.monotonic() - self.started < JUDGED_LATELY_S

    def alive(self) -> bool:
        return self.process.poll() is None

    def messages(self) -> str:
        """The end of what it wrote to its standard error."""
        self.log.seek(0, os.SEEK_END)
        self.log.seek(max(0, self.log.tell() - 4000))
        return self.log.read().decode(errors="replace")

    def close(self) -> None:
        if self.alive():
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.log.close()


@dataclass
class Trainers:
    """Long-lived trainers kept by one owner (see grader.grading.warm), by setup, since that fixes a
    trainer's device, threads and memory: started early (`prepare`: its torch import runs beside the
    notebook), then each training one model at a time and many in turn (`take`, `give_back`), keeping the
    task's data in memory between jobs. A trainer never runs student code (it rebuilds the model from a
    description) and each job starts from its own seed, so one student's model leaves nothing behind that
    changes the next one's grade (tested: the same record as a new trainer's). Jobs at once (a Dask
    worker's threads) each get a trainer of their own, which share the device."""

    # how busy the machine was before the owner's own work began (grade_command judges it at its start), for
    # the trainers it starts in the JUDGED_LATELY_S after; None (or later): judged as each starts
    contended: bool | None = None
    _idle: dict[TrainingSetup, list[Trainer]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)  # a Dask worker grades in threads
    _made: float = field(default_factory=time.monotonic)

    def __enter__(self) -> Trainers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def prepare(self, setup: TrainingSetup) -> None:
        """Start a trainer for `setup` now, if none is idle, so that it has imported torch by the time a
        model is trained: grading starts it with the notebook, and its import runs beside the kernel."""
        with self._lock:
            idle = self._idle.setdefault(setup, [])
            dead = [trainer for trainer in idle if not trainer.alive()]
            for trainer in dead:
                idle.remove(trainer)
            wanted = not idle
        for trainer in dead:
            trainer.close()
        if wanted:  # started outside the lock: how its threads wait is measured over a moment
            started = _start_trainer(setup, self._judged_before())
            with self._lock:
                self._idle.setdefault(setup, []).append(started)

    def take(self, setup: TrainingSetup) -> Trainer:
        """An idle trainer for `setup`, or a new one; it is the caller's until `give_back`."""
        busy: bool | None = None  # the machine judged now, once
        while True:
            with self._lock:
                idle = self._idle.get(setup, [])
                trainer = idle.pop() if idle else None
            if trainer is None:
                return _start_trainer(setup, self._judged_before() if busy is None else busy)
            if not trainer.alive():
                trainer.close()
                continue
            if not trainer.spins or trainer.judged_lately():
                return trainer
            # one that spins, started while the machine was quiet, is not kept once it is busy: spinning
            # threads there slowed training 1.6-4.8x (the numbers are the same either way)
            if busy is None:
                busy = cpu_contended_now()
            if not busy:
                return trainer
            trainer.close()

    def _judged_before(self) -> bool | None:
        """`contended`, while it is still news."""
        return self.contended if time.monotonic() - self._made < JUDGED_LATELY_S else None

    def give_back(self, setup: TrainingSetup, trainer: Trainer) -> None:
        """A trainer that finished its job, kept for the next one (or ended, after JOBS_PER_TRAINER)."""
        trainer.jobs += 1
        if not trainer.alive() or trainer.jobs >= JOBS_PER_TRAINER:
            trainer.close()
            return
        with self._lock:
            self._idle.setdefault(setup, []).append(trainer)

    def close(self) -> None:
        with self._lock:
            trainers = [trainer for idle in self._idle.values() for trainer in idle]
            self._idle.clear()
        for trainer in trainers:  # idle: nothing of a job is lost
            trainer.close()


def _start_trainer(setup: TrainingSetup, contended: bool | None = None) -> Trainer:
    log = tempfile.TemporaryFile(prefix="grader-trainer-")  # noqa: SIM115 - the Trainer closes it
    waiting = trainer_waiting(setup.threads, contended)
    process = start_trusted([sys.executable, "-m", "grader.ml.trainer", WAIT_FOR_JOB], memory_mb=setup.memory_mb,
                            threads=setup.threads, device=setup.device, stderr=log, waiting=waiting)
    return Trainer(process, log, spins="GOMP_SPINCOUNT" in waiting)


def _write_job(job: Path, description: ModelDescription, task: ModelTask, data: TaskData, budget: Budget,
               setup: TrainingSetup) -> None:
    graph = description.graph
    assert graph is not None, "a model the grader trains was described from its graph"
    spec = {"model": graph.to_answer(), "state_files": _saved(job, "state", graph.state), "seed": setup.seed,
            "device": setup.device, "threads": setup.threads, "memory_mb": setup.memory_mb,
            "input_style": description.input_style, "tuple_index": description.tuple_index,
            "loss_kind": loss_kind(task, description, budget), "n_outputs": task.n_outputs,
            "max_cpu_seconds": max_cpu_seconds(task, setup), "data": {k: str(v) for k, v in data.files().items()},
            "budget": {"optimizer": budget.optimizer, "lr": budget.lr, "epochs": budget.epochs,
                       "batch_size": budget.batch_size}}
    (job / "job.json").write_text(json.dumps(spec))


def _write_analysis_job(job: Path, graph: ModelGraph, task: ModelTask, probes: dict[str, np.ndarray],
                        setup: TrainingSetup) -> None:
    """An analysis job (grader/ml/trainer.py): the graph as for training, the grader's probe inputs, and what
    the student's own forward pass gave on them (compared there with the rebuild's)."""
    answers = {}
    for i, (style, answer) in enumerate(graph.probes.items()):  # the styles the student's answer named
        saved = _saved(job, f"answer-{i}", {j: out for j, out in enumerate(answer.outputs) if out is not None})
        answers[style] = {"error": answer.error, "is_tuple": answer.is_tuple,
                          "files": [saved.get(j) for j in range(len(answer.outputs))]}
    spec = {"kind": "analyze", "model": graph.to_answer(), "state_files": _saved(job, "state", graph.state),
            "seed": setup.seed, "threads": setup.threads, "inputs": _saved(job, "input", probes), "answers": answers,
            "task": {"kind": task.kind, "n_outputs": task.n_outputs, "input_styles": list(task.input_styles)}}
    (job / "job.json").write_text(json.dumps(spec))


def _saved(job: Path, prefix: str, arrays: dict[Any, np.ndarray]) -> dict[Any, str]:
    """Each array saved as JOB/<prefix>-<i>.npy, named by its place (never by a key the student chose): the
    file of each key, as the trainer finds it."""
    files = {}
    for i, (key, array) in enumerate(arrays.items()):
        np.save(job / f"{prefix}-{i}.npy", array, allow_pickle=False)
        files[key] = f"{prefix}-{i}.npy"
    return files


def _answer(job: Path, trainer: Trainer) -> Any:
    fd = os.open(job, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return read_value(fd, "out")
    except ExchangeError:
        tail = " | ".join(trainer.messages().strip().splitlines()[-3:])
        raise GraderFailure(f"its training process failed (exit status {trainer.process.returncode}"
                            + (f": {tail[:300]}" if tail else "") + ")") from None
    finally:
        os.close(fd)


def checked_run(answer: Any, *, budget: Budget, n_train: int, n_test: int, n_outputs: int,
                n_extra: int | None = None) -> TrainingRun:
    """The trainer's record, checked against the budget the grader set: the grader counts for itself.
    With `n_extra`, it must hold the trained model's outputs on that many extra inputs too."""
    if not isinstance(answer, dict) or not isinstance(answer.get("history"), dict):
        raise StudentError("the grader got a malformed training record", kind=StudentErrorKind.BROKEN)
    outputs = []
    for array in answer.get("test_outputs", []):
        if not isinstance(array, np.ndarray) or array.shape != (n_test, n_outputs) or array.dtype.kind != "f":
            raise StudentError("the grader got test outputs of the wrong shape from training",
                               kind=StudentErrorKind.BROKEN)
        outputs.append(array.astype(np.float64))
    history = answer["history"]

    def floats(key: str) -> tuple[float, ...]:
        return tuple(float(v) if isinstance(v, (int, float)) else math.nan for v in history.get(key, []))

    losses = floats("train_loss")
    stopped = answer.get("stopped_early")
    stopped = str(stopped)[:300] if stopped else None
    # the record's own values, of any type until checked below
    epochs: Any = answer.get("epochs_run")
    steps: Any = answer.get("steps")
    per_epoch = math.ceil(n_train / budget.batch_size)
    full = (stopped is None and epochs == budget.epochs and steps == budget.steps(n_train))
    partial = (stopped is not None and isinstance(epochs, int) and isinstance(steps, int)
               and epochs <= budget.epochs and (epochs - 1) * per_epoch <= steps <= epochs * per_epoch + per_epoch)
    if not (full or partial) or len(outputs) != len(losses) + 1 or len(losses) != epochs:
        raise StudentError(f"the training run did not follow the grader's budget ({budget.text()}: "
                           f"{budget.epochs} epochs, {budget.steps(n_train)} steps; the record says "
                           f"{epochs} epochs, {steps} steps, {len(outputs)} test evaluations); it is not scored",
                           kind=StudentErrorKind.BROKEN)
    extra = None
    if n_extra is not None:
        extra = answer.get("extra_outputs")
        if not isinstance(extra, np.ndarray) or extra.shape != (n_extra, n_outputs) or extra.dtype.kind != "f":
            raise StudentError("the grader got outputs of the wrong shape on its extra inputs from training",
                               kind=StudentErrorKind.BROKEN)
        extra = extra.astype(np.float64)
    wall, cpu = answer.get("wall_s"), answer.get("cpu_s")
    return TrainingRun(epochs_run=epochs, steps=steps, train_loss=losses, train_accuracy=floats("train_accuracy"),
                       test_outputs=tuple(outputs), stopped_early=stopped,
                       wall_s=float(wall) if isinstance(wall, (int, float)) else 0.0,
                       device=str(answer.get("device", ""))[:20], budget=budget, extra_outputs=extra,
                       cpu_s=float(cpu) if isinstance(cpu, (int, float)) else 0.0)

