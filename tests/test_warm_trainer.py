"""Long-lived trainers (grader/ml/training.py): started before they are needed, training one model at a
time and many in turn with the same record as a new trainer's, never left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import SOLUTIONS, assignment, edit_source, load, save
from grader.grading.pipeline import grade_submission
from grader.grading.warm import Warm
from grader.ml import training
from grader.ml.analysis import Analysis, analysis_from, analysis_to_answer
from grader.ml.training import Trainers, TrainingSetup
from grader.sandbox import limits


def test_a_prepared_trainer_is_the_one_training_takes_and_comes_back_for_the_next_job():
    setup = TrainingSetup(threads=1, memory_mb=2048, seed=7)
    with Trainers() as trainers:
        trainers.prepare(setup)
        (waiting,) = trainers._idle[setup]
        trainers.prepare(setup)  # one is idle already: no second
        assert trainers._idle[setup] == [waiting]
        assert trainers.take(setup) is waiting and trainers._idle[setup] == []
        other = trainers.take(setup)  # none idle: a new one, for a job at the same time
        assert other is not waiting
        trainers.give_back(setup, waiting)
        trainers.give_back(setup, other)
        assert trainers._idle[setup] == [waiting, other] and waiting.jobs == other.jobs == 1
        assert trainers.take(setup) is other  # the latest back: the warmest
        other.close()  # taken: the caller's to end
    assert not waiting.alive() and not other.alive()


def test_a_trainer_is_replaced_after_its_share_of_jobs_or_when_it_died(monkeypatch):
    monkeypatch.setattr(training, "JOBS_PER_TRAINER", 2)
    setup = TrainingSetup(threads=1)
    with Trainers() as trainers:
        trainer = trainers.take(setup)
        trainers.give_back(setup, trainer)
        assert trainers.take(setup) is trainer
        trainers.give_back(setup, trainer)  # its second job: ended, not kept
        assert trainers._idle[setup] == [] and not trainer.alive()
        dead = trainers.take(setup)
        dead.process.kill()
        dead.process.wait()
        trainers.give_back(setup, dead)
        assert trainers._idle[setup] == []
        fresh = trainers.take(setup)
        assert fresh is not dead
        fresh.close()


def test_a_spinning_trainer_is_not_kept_once_the_machine_is_busy(monkeypatch):
    setup = TrainingSetup(threads=2)
    monkeypatch.setattr(training, "trainer_waiting", lambda threads, contended: {"GOMP_SPINCOUNT": "3000"})
    with Trainers() as trainers:
        spinning = trainers.take(setup)
        assert spinning.spins
        trainers.give_back(setup, spinning)
        monkeypatch.setattr(training, "cpu_contended_now", lambda: False)
        assert trainers.take(setup) is spinning  # quiet: kept
        trainers.give_back(setup, spinning)
        monkeypatch.setattr(training, "cpu_contended_now", lambda: True)
        monkeypatch.setattr(training, "trainer_waiting", lambda threads, contended: {"OMP_WAIT_POLICY": "PASSIVE"})
        sleeping = trainers.take(setup)  # busy now: a new one whose threads sleep
        assert sleeping is not spinning and not spinning.alive() and not sleeping.spins
        trainers.give_back(setup, sleeping)
        assert trainers.take(setup) is sleeping  # and that one stays, busy or not
        sleeping.close()


def test_a_trainer_started_for_a_grade_keeps_the_waiting_judged_before_the_grade_loaded_the_machine(monkeypatch):
    """`grader grade` judges the machine before it starts a process of its own. The trainer it starts then is
    not judged again for its first job: by then the grade's own kernel and the trainer's imports are the
    load, and a trainer replaced for them paid torch's import twice (2.6 s, seen here)."""
    setup = TrainingSetup(threads=2)

    def not_now():
        raise AssertionError("the machine was judged again, during the grade's own start")

    monkeypatch.setattr(training, "cpu_contended_now", not_now)
    monkeypatch.setattr(limits, "cpu_contended_now", not_now)
    with Warm(contended=False) as quiet:
        quiet.trainers.prepare(setup)
        spinning = quiet.trainers.take(setup)
        assert spinning.spins and spinning.judged_lately()
        quiet.trainers.give_back(setup, spinning)
        assert not spinning.judged_lately()  # it has trained since: busy now or not is asked again
        monkeypatch.setattr(training, "cpu_contended_now", lambda: True)
        sleeping = quiet.trainers.take(setup)  # busy now: its replacement sleeps, whatever the start said
        assert sleeping is not spinning and not spinning.alive() and not sleeping.spins
        sleeping.close()
    with Warm(contended=True) as busy:
        busy.trainers.prepare(setup)
        assert not busy.trainers.take(setup).spins


def _training_records(result) -> dict[str, dict]:
    """Each trained check's record, without its timings."""
    return {check.id: {key: value for key, value in check.details["training"].items() if key not in ("wall_s", "cpu_s")}
            for check in result.checks if check.details.get("training")}


def test_a_trainer_that_trained_other_models_gives_the_record_of_a_new_one(options, tmp_path, monkeypatch):
    """The same seed gives the same grade to the last digit, whatever the trainer trained before."""
    spec = assignment("toy-2d")
    other = tmp_path / "other.ipynb"
    notebook = load(SOLUTIONS / "toy_2d.ipynb")
    save(edit_source(notebook, "build_model", "nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, outputs)",
                     "nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, outputs)"), other)
    with Warm() as warm:
        grade_submission(other, spec, options, warm)  # a different model first, in the same trainers
        reused = grade_submission(SOLUTIONS / "toy_2d.ipynb", spec, options, warm)
        (trainer,) = [t for idle in warm.trainers._idle.values() for t in idle]
        assert trainer.jobs >= 2 * len(_training_records(reused))  # every job of both grades in one process
    monkeypatch.setattr(training, "JOBS_PER_TRAINER", 1)  # each job in a new trainer
    with Warm() as warm:
        fresh = grade_submission(SOLUTIONS / "toy_2d.ipynb", spec, options, warm)
        assert not any(warm.trainers._idle.values())
    assert _training_records(reused) and _training_records(reused) == _training_records(fresh)
    assert reused.score == fresh.score == spec.max_score


def test_closing_the_owner_kills_its_idle_trainers():
    trainers = Trainers()
    trainers.prepare(TrainingSetup())
    (process,) = [trainer.process for idle in trainers._idle.values() for trainer in idle]
    trainers.close()
    assert process.poll() is not None and trainers._idle == {}


@pytest.mark.parametrize("ending", ["returns", "killed"])
def test_an_idle_trainer_dies_with_the_grader_however_it_ends(ending):
    # without an exit hook: its jobs come on a pipe from the grader, and a pipe whose writer is gone
    # (an unclosed owner at exit, or a grader killed outright) reads as "no more jobs"
    script = ("import os, signal\nfrom grader.ml import training\n"
              "trainers = training.Trainers()\ntrainers.prepare(training.TrainingSetup())\n"
              "print(next(iter(trainers._idle.values()))[0].process.pid, flush=True)\n"
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


def test_a_model_grade_imports_torch_in_the_trainer_and_the_kernel_only(tmp_path):
    """The rebuild of the student's model runs in the trainer, which imports torch anyway: the grader's own
    process does not (three torch imports at once on two cores cost a model grade a second). `grader grade`
    starts that one trainer as soon as it has loaded the assignment, before the submission's grading begins,
    and every job of the grade goes to it."""
    script = ("import sys\nfrom grader.cli import main\nfrom grader.grading import pipeline\n"
              "from grader.ml import training\nevents = []\n"
              "def spy(module, name):\n"
              "    real = getattr(module, name)\n"
              "    setattr(module, name, lambda *a, **k: events.append(name) or real(*a, **k))\n"
              "spy(training, '_start_trainer'); spy(pipeline, 'grade_submission')\n"
              f"code = main(['grade', {str(SOLUTIONS / 'toy_2d.ipynb')!r}, '--out', {str(tmp_path / 'out')!r}, "
              "'--device', 'cpu'])\nprint('torch imported:', 'torch' in sys.modules, 'exit:', code, events)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.stdout.splitlines()[-1] == \
        "torch imported: False exit: 0 ['_start_trainer', 'grade_submission']", done.stdout + done.stderr


def test_the_trainer_s_analysis_is_read_as_data():
    analysis = Analysis(input_style="flat", forward_errors={"image": "RuntimeError: shapes"}, tuple_index=None,
                        output_shape=(16, 10), output_kind="logits", activation_bytes=4096,
                        node_shapes={"fc1": (128,), "out": (10,)}, output_range=(-3.5, 2.0), bounded_output=False)
    assert analysis_from(json.loads(json.dumps(analysis_to_answer(analysis)))) == analysis
    good = analysis_to_answer(analysis)
    for field, bad in [("input_style", 3), ("output_shape", "10"), ("tuple_index", True), ("output_finite", "yes"),
                       ("node_shapes", {"fc1": [None, "x"]}), ("forward_errors", ["a"]), ("output_range", [1.0]),
                       ("output_shape", [None, 10])]:
        with pytest.raises((TypeError, ValueError, KeyError, IndexError)):
            analysis_from({**good, field: bad})
    with pytest.raises(KeyError):
        analysis_from({k: v for k, v in good.items() if k != "probe_mismatch"})
