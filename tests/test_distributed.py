"""Grading a batch on a Dask cluster (`grader batch --scheduler`).

A real scheduler and two workers run as separate processes (`dask scheduler`,
`dask worker`) on the loopback interface, shared by the tests of this module:
w1 says it has a GPU (`--resources GPU=1` and tests/dask_fake_gpu.py), w2
does not. Workers are killed mid-grading the way an out-of-memory killer
would (SIGKILL to the worker process; its nanny starts a new one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import nbformat
import pytest

from conftest import SOLUTIONS, TEMPLATES, edit_source, load, save, with_cell
from loopback_cluster import START_TIMEOUT_S, LoopbackCluster, free_port

pytest.importorskip("distributed")

from grader.cli import main
from grader.errors import UsageError
from grader.grading.batch import BatchJob, BatchProgress
from grader.grading.distributed import GPU_RESOURCE, STOPPED_TWO, CourseBundle, DaskRunner, Placement, _Tasks, place
from grader.sandbox.reaping import OWNER_FILE, sweep_orphaned_sandboxes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LoopbackCluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.close()


def _grade(submissions: Path, out: Path, *extra: str) -> int:
    return main(["batch", str(submissions), "--assignment", "gradient-descent", "--out", str(out), *extra])


def _results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))}


def _check_scores(result: dict) -> dict[str, float]:
    return {c["id"]: c["score"] for c in result["checks"]}


class Killer(threading.Thread):
    """Kills the worker grading `student`, `times` times (each time another worker process)."""

    def __init__(self, cluster: LoopbackCluster, student: str, times: int):
        super().__init__(daemon=True)
        self.cluster, self.student, self.times = cluster, student, times
        self.killed: set[int] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(self.times):
                self.killed.add(self.cluster.kill_worker_running(self.student, spared=self.killed))
        except BaseException as exc:  # reported by the test
            self.error = exc


# --------------------------------------------------------------------------
# Placement and bookkeeping, without a cluster


def _spec(resources):
    from grader.course.assignment import Assignment

    return Assignment(id="x", title="x", notebook="x.ipynb", checks=(), resources=resources)


@pytest.mark.parametrize("requested, trains, workers, expected", [
    ("auto", True, {"a": {"resources": {"GPU": 1}}, "b": {"resources": {}}}, Placement("cuda", {"GPU": 1})),
    ("auto", False, {"a": {"resources": {"GPU": 1}}, "b": {"resources": {}}}, Placement("cpu")),
    ("auto", True, {"b": {"resources": {}}}, Placement("cpu")),
    ("cpu", True, {"a": {"resources": {"GPU": 1}}}, Placement("cpu")),
    ("cuda", False, {"a": {"resources": {"GPU": 2}}}, Placement("cuda", {"GPU": 1})),
])
def test_model_training_goes_to_gpu_workers(requested, trains, workers, expected):
    assert place(_spec((lambda request: None) if trains else None), requested, workers) == expected


def test_cuda_without_gpu_workers_is_a_usage_error():
    with pytest.raises(UsageError, match="--resources GPU=1"):
        place(_spec(None), "cuda", {"b": {"resources": {}}})


def test_workers_get_the_spec_and_never_the_reference_notebook(tmp_path):
    from conftest import assignment

    bundle = CourseBundle.of(assignment("gradient-descent"))
    root = bundle.unpack(tmp_path)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "solutions", "solutions/gradient_descent.py"]
    assert (root / "solutions" / "gradient_descent.py").read_bytes() == (SOLUTIONS / "gradient_descent.py").read_bytes()


class _FakeFuture:
    def __init__(self, exc: BaseException):
        self.exc = exc

    def result(self):
        raise self.exc

    def release(self):
        pass


class _FakeClient:
    def __init__(self, starts: int):
        self.starts, self.submitted = starts, []

    def get_metadata(self, key, default=None):
        return self.starts

    def submit(self, *args, **kwargs):
        self.submitted.append(kwargs["key"])
        return object()


@pytest.mark.parametrize("starts", [1, 2])
def test_a_task_the_scheduler_gave_up_on_is_retried_once_unless_started_twice(starts, options, tmp_path):
    """The scheduler's KilledWorker (its allowed-failures spent): a zero if the notebook was started twice,
    else one more try (it may only have been queued on workers that died of something else)."""
    from distributed.scheduler import KilledWorker

    from conftest import assignment
    from grader.grading.distributed import RemoteJob
    from grader.intake.collect import BatchItem

    notebook = tmp_path / "mallory.ipynb"
    notebook.write_bytes((SOLUTIONS / "gradient_descent.ipynb").read_bytes())
    item = BatchItem("mallory", notebook)
    spec = assignment("gradient-descent")
    client = _FakeClient(starts)
    remote = RemoteJob(bundle=CourseBundle.of(spec), options=options, audience="student", device="cpu",
                       data_root=None, batch_id="b")
    tasks = _Tasks(client, remote, Placement("cpu"))
    dead = _FakeFuture(KilledWorker("k", None, 3))
    tasks.items[dead] = (item, 0)
    outcome = tasks.outcome(dead, BatchJob(spec, options, "student"))
    if starts == 2:
        assert outcome.result.message == STOPPED_TWO and outcome.result.score == 0
        assert outcome.result.submission_sha256  # kept on resume: not started a third time
        assert client.submitted == []
    else:
        assert client.submitted == [("grader-batch", "b", "mallory", 1)]


def test_workers_refuse_to_grade_wrongly_or_unsafely(options, monkeypatch):
    """A GPU worker without CUDA, a networked sandbox on a cluster without TLS, 'user' with threads."""
    import grader.grading.distributed as remote
    from conftest import assignment
    from grader.errors import HarnessError

    job = remote.RemoteJob(bundle=CourseBundle.of(assignment("gradient-descent")), options=options,
                           audience="student", device="cuda", data_root=None, batch_id="b")
    monkeypatch.setattr(remote, "_cuda_available", lambda: False)
    monkeypatch.setattr(remote, "sweep_what_dead_graders_left", lambda: None)
    with pytest.raises(HarnessError, match="torch sees no CUDA device"):
        remote.WorkerState().check_once(job, 1, "tcp://127.0.0.1:8786")
    job = remote.RemoteJob(**{**job.__dict__, "device": "cpu"})
    monkeypatch.setattr("grader.sandbox.detect.choose_isolation", lambda *args, **kwargs: "user")
    with pytest.raises(UsageError, match="could reach the Dask scheduler"):
        remote.WorkerState().check_once(job, 1, "tcp://127.0.0.1:8786")
    with pytest.raises(UsageError, match="--nthreads 1"):
        remote.WorkerState().check_once(job, 2, "tls://127.0.0.1:8786")
    remote.WorkerState().check_once(job, 1, "tls://127.0.0.1:8786")


def test_an_unreachable_scheduler_is_a_usage_error(options):
    from conftest import assignment

    runner = DaskRunner(f"tcp://127.0.0.1:{free_port()}", connect_timeout_s=1)
    with pytest.raises(UsageError, match="cannot reach the Dask scheduler"):
        runner.run([object()], BatchJob(assignment("gradient-descent"), options, "student"), lambda graded: None)


def test_scheduler_and_jobs_do_not_mix(tmp_path, capsys):
    assert _grade(tmp_path, tmp_path / "out", "--scheduler", "tcp://127.0.0.1:1", "-j", "2") == 2
    assert "-j is for grading on this machine" in capsys.readouterr().err


def test_scheduler_without_dask_installed_says_which_extra_to_install(tmp_path, capsys, monkeypatch):
    for module in ("distributed", "dask"):
        monkeypatch.setitem(sys.modules, module, None)  # what an install without the dask extra imports
    assert _grade(tmp_path, tmp_path / "out", "--scheduler", "tcp://127.0.0.1:1") == 2
    err = capsys.readouterr().err
    assert "Dask is not installed here: pip install 'grader[dask]'" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_progress_rate_and_time_left():
    progress = BatchProgress(done=12, total=30, graded=10, elapsed_s=120.0, workers=3)
    assert progress.rate_per_min == 5.0 and progress.eta_s == 18 * 60 / 5
    assert BatchProgress(done=2, total=30, graded=0, elapsed_s=0.0, workers=0).eta_s is None


def test_sandboxes_of_dead_graders_are_swept_and_only_those(tmp_path):
    dead_pid = os.getpid() + 1_000_000  # beyond pid_max: no such process
    live = {"pid": os.getpid(), "start": Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19],
            "pid_namespace": os.readlink("/proc/self/ns/pid"), "cgroups": []}
    sandboxes = {"grader-dead": {**live, "pid": dead_pid}, "grader-reused-pid": {**live, "start": "1"},
                 "grader-live": live, "grader-elsewhere": {**live, "pid": dead_pid, "pid_namespace": "pid:[1]"}}
    for name, record in sandboxes.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / OWNER_FILE).write_text(json.dumps(record))
    (tmp_path / "grader-being-set-up").mkdir()
    swept = sweep_orphaned_sandboxes(tmp_path)
    assert sorted(Path(p).name for p in swept) == ["grader-dead", "grader-reused-pid"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grader-being-set-up", "grader-elsewhere", "grader-live"]


def test_a_grader_killed_while_it_sets_a_sandbox_up_leaves_nothing_the_sweep_misses(tmp_path):
    """Killed between the sandbox's tmpfs and the rest of its set-up (here: stopped in its copy of the child
    library), a grader leaves a root whose owner the sweep can tell is gone: CI once found such a tmpfs
    still mounted, owned by no record, minutes after the test that killed its grader."""
    script = textwrap.dedent(f"""
        import os, shutil, signal, tempfile
        tempfile.tempdir = {str(tmp_path)!r}
        from grader.sandbox import jail
        from grader.sandbox.limits import Limits

        def killed_here(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        jail.shutil.copytree = killed_here
        jail.Sandbox(Limits()).__enter__()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    (left,) = tmp_path.glob("grader-*")
    assert sweep_orphaned_sandboxes(tmp_path) == [str(left)]
    assert not left.exists() and not os.path.ismount(left)


# --------------------------------------------------------------------------
# On a real cluster

PROBE_SPEC = textwrap.dedent('''
    """A probe assignment: one check that reports where it was graded. {kind}"""
    import os
    from pathlib import Path

    from grader.course.assignment import Assignment, Check
    from grader.scoring import Outcome


    def where(ctx):
        from distributed import get_worker

        worker = get_worker()
        return Outcome.passed("graded", device=ctx.device, worker=str(worker.name),
                              resources=dict(worker.state.total_resources),
                              course_files=sorted(os.listdir(Path(__file__).parent)))


    ASSIGNMENT = Assignment(id="{id}", title="probe", notebook="{id}.ipynb",
                            checks=(Check("where", "where it ran", 1, where),), resources={resources})
''')


def _probe_course(root: Path) -> Path:
    (root / "solutions").mkdir(parents=True)
    for spec_id, resources in (("probe-model", "lambda request: request.device"), ("probe-plain", "None")):
        name = spec_id.replace("-", "_")
        (root / "solutions" / f"{name}.py").write_text(PROBE_SPEC.format(id=spec_id, resources=resources,
                                                                          kind=spec_id))
        (root / "solutions" / f"{name}.ipynb").write_text("{}")  # the reference notebook: never shipped
    return root


def test_model_assignments_run_on_the_gpu_worker_and_the_course_travels(cluster, tmp_path, capsys):
    course = _probe_course(tmp_path / "course")
    submissions = tmp_path / "in"
    submissions.mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    for student in ("ann", "ben", "cid"):
        save(notebook, submissions / f"{student}.ipynb")
    details = {}
    for spec_id in ("probe-model", "probe-plain"):
        out = tmp_path / spec_id
        assert main(["batch", str(submissions), "--assignment", spec_id, "--course", str(course), "--out", str(out),
                     "--scheduler", cluster.address]) == 0
        details[spec_id] = {s: r["checks"][0]["details"] for s, r in _results(out).items()}
        assert set(details[spec_id]) == {"ann", "ben", "cid"}
    model = details["probe-model"].values()
    assert all(d["device"] == "cuda" and d["worker"] == "w1" and d["resources"] == {GPU_RESOURCE: 1.0} for d in model)
    assert all(d["device"] == "cpu" for d in details["probe-plain"].values())
    for found in (*details["probe-model"].values(), *details["probe-plain"].values()):
        assert len(found["course_files"]) == 1 and found["course_files"][0].endswith(".py")
    assert "[3/3]" in capsys.readouterr().err


def _mixed_batch(folder: Path, *, slow: dict[str, float]) -> Path:
    folder.mkdir()
    solution = load(SOLUTIONS / "gradient_descent.ipynb")
    save(solution, folder / "alice.ipynb")
    (folder / "bob.ipynb").write_bytes((TEMPLATES / "gradient_descent.ipynb").read_bytes())
    save(edit_source(solution, "linear_grad", "residual = a * x + b - y", "residual = y - (a * x + b)"),
         folder / "carol.ipynb")
    (folder / "dave.ipynb").write_text("{ not json")
    for student, seconds in slow.items():  # a solution with a slow cell: time to kill its worker
        save(with_cell(solution, f"import time\ntime.sleep({seconds})"), folder / f"{student}.ipynb")
    return folder


def test_a_killed_worker_costs_one_retry_and_the_scores_match_one_machine(cluster, tmp_path, capsys):
    submissions = _mixed_batch(tmp_path / "in", slow={"erin": 5})
    assert _grade(submissions, tmp_path / "local", "-j", "1", "--device", "cpu") == 0
    local = _results(tmp_path / "local")
    capsys.readouterr()

    killer = Killer(cluster, "erin", times=1)
    killer.start()
    assert _grade(submissions, tmp_path / "cluster", "--scheduler", cluster.address) == 0
    killer.join(timeout=60)
    assert killer.error is None and len(killer.killed) == 1
    remote = _results(tmp_path / "cluster")
    assert sorted(remote) == sorted(local) == ["alice", "bob", "carol", "dave", "erin"]
    assert sorted(p.name for p in (tmp_path / "cluster").iterdir() if p.is_dir()) == ["_students", *sorted(local)]
    assert {s: _check_scores(r) for s, r in remote.items()} == {s: _check_scores(r) for s, r in local.items()}
    full = remote["alice"]["max_score"]
    assert [remote[s]["score"] for s in ("alice", "bob", "dave", "erin")] == [full, 0, 0, full]
    assert 0 < remote["carol"]["score"] < full
    assert remote["erin"]["status"] == "graded" and remote["erin"]["environment"]["worker"] in ("w1", "w2")
    log = capsys.readouterr().err
    assert "[5/5]" in log and "/min" in log and "left" in log and "worker(s)" in log


def test_a_notebook_that_stops_two_workers_gets_a_zero_and_the_batch_goes_on(cluster, tmp_path, capsys):
    submissions = tmp_path / "in"
    submissions.mkdir()
    solution = load(SOLUTIONS / "gradient_descent.ipynb")
    save(solution, submissions / "oscar.ipynb")
    save(with_cell(solution, "import time\ntime.sleep(60)"), submissions / "mallory.ipynb")
    killer = Killer(cluster, "mallory", times=2)
    killer.start()
    out = tmp_path / "out"
    assert _grade(submissions, out, "--scheduler", cluster.address) == 0
    killer.join(timeout=60)
    assert killer.error is None and len(killer.killed) == 2
    results = _results(out)
    assert results["oscar"]["score"] == 14
    mallory = results["mallory"]
    assert mallory["score"] == 0 and mallory["status"] == "error" and mallory["message"] == STOPPED_TWO
    assert all(c["message"] == STOPPED_TWO for c in mallory["checks"])
    capsys.readouterr()
    # the zero stands: running the batch again does not hand the notebook a third worker
    assert _grade(submissions, out, "--scheduler", cluster.address) == 0
    assert "done: 0 graded, 2 already graded" in capsys.readouterr().err
    cluster.client().wait_for_workers(2, timeout=START_TIMEOUT_S)  # both nannies started new workers
