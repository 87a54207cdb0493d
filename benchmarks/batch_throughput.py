"""Batch throughput: grader batch -j 1 / -j 2 against nbgrader 0.9.6's autograde, and grader grade's overhead.

Run by hand: `python benchmarks/batch_throughput.py [--repeat 3] [--batch-repeat 1]`.
Every number comes from one run of this script, on the same 20 gradient-descent
submissions (10 correct, 5 with a sign error in linear_grad, 5 untouched
templates); these machines are shared and noisy, so compare the ratios, not
the seconds. Series are interleaved so that a drift in load hits all alike.

- nbgrader autograde: nbgrader 0.9.6, installed by this script in its own
  virtual environment under --cache (python3.11 -m venv; pip install
  nbgrader==0.9.6 numpy matplotlib), with a course directory whose source
  notebook is the reference solution without its demo cells, each function
  cell a solution cell, followed by autograded test cells: one per check of
  the grader's spec, simple asserts against closed-form references (the
  hidden checks' asserts inside nbgrader's hidden-test markers). Each
  submission is the release notebook with the student's function cells in
  place. Timed: the whole `nbgrader autograde` command.
- grader batch -j 1 and -j 2: the whole command on a fresh output directory.
- grader grade on one notebook against a bare nbclient script executing the
  same graded cells (the solution without its demo cells), each a whole
  process, interpreter start included.
- The same -j 1 batch and grade with --cold-kernels: every kernel started
  from scratch instead of forked from the pre-started kernel image.
- Per-submission timings: medians of result.json's timings over the -j 1
  batch (resources_s, execute_s and its sandbox_s and kernel_start_s,
  checks_s, total_s), report rendering timed in this process, and the grade
  process's own start (the whole process less result.json's total_s).

The goals are issue #24's: -j 2 throughput >= 6x nbgrader's; -j 2 >= 1.85x
-j 1; grader grade <= 0.8x the bare nbclient run (an earlier issue asked for 3x,
1.8x and 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
SOLUTION = REPO / "solutions" / "gradient_descent.ipynb"
TEMPLATE = REPO / "assignments" / "gradient_descent.ipynb"
NBGRADER = "nbgrader==0.9.6"
NBGRADER_EXTRAS = ("numpy", "matplotlib")  # what the notebook imports, in nbgrader's kernel
SIGN_ERROR = ("residual = a * x + b - y", "residual = y - (a * x + b)")
FUNCTIONS = ("linear_grad", "fit_linear", "init_params", "mlp_forward", "mlp_grad", "fit_mlp")
ASSIGNMENT = "gd"
GOALS = {"-j 2 / nbgrader (throughput)": (">=", 6.0), "-j 2 / -j 1 (throughput)": (">=", 1.85),
         "grader grade / bare nbclient (time)": ("<=", 0.8)}


# --------------------------------------------------------------------------
# The submissions


def _is_demo(cell) -> bool:
    return "demo" in cell.metadata.get("tags", [])


def _defines(cell, name: str) -> bool:
    return cell.cell_type == "code" and f"def {name}(" in cell.source


def submissions() -> dict[str, nbformat.NotebookNode]:
    """20 notebooks: s01-s10 the solution, s11-s15 a sign error in linear_grad, s16-s20 the template."""
    solution = nbformat.read(SOLUTION, as_version=4)
    sign = nbformat.from_dict(solution)
    cell = next(c for c in sign.cells if _defines(c, "linear_grad"))
    assert SIGN_ERROR[0] in cell.source, "the solution's linear_grad changed: update SIGN_ERROR"
    cell.source = cell.source.replace(*SIGN_ERROR)
    template = nbformat.read(TEMPLATE, as_version=4)
    kinds = [solution] * 10 + [sign] * 5 + [template] * 5
    return {f"s{i:02d}": nbformat.from_dict(nb) for i, nb in enumerate(kinds, start=1)}


# --------------------------------------------------------------------------
# nbgrader: its own environment, a course, and the same submissions


REFERENCE_CELL = textwrap.dedent('''\
    import numpy as _np

    def _line_grad(x, y, a, b):
        r = a * x + b - y
        return _np.array([2 * _np.mean(r * x), 2 * _np.mean(r)])

    def _line_descent(x, y, lr, n_iter, a0, b0):
        t = _np.array([a0, b0], dtype=float)
        for _ in range(n_iter):
            t = t - lr * _line_grad(x, y, *t)
        return t

    def _forward(x, p):
        return _np.maximum(0, x[:, None] * p["a1"] + p["b1"]) @ p["a2"] + p["b2"]

    def _net_grad(x, y, p):
        pre = x[:, None] * p["a1"] + p["b1"]
        h = _np.maximum(0, pre)
        d_out = 2 * (h @ p["a2"] + p["b2"] - y) / len(x)
        d_pre = d_out[:, None] * p["a2"] * (pre > 0)
        return {"a1": (d_pre * x[:, None]).sum(0), "b1": d_pre.sum(0), "a2": h.T @ d_out, "b2": d_out.sum()}

    def _net_descent(x, y, p, lr, n_iter):
        p = {k: _np.asarray(v, dtype=float) for k, v in p.items()}
        for _ in range(n_iter):
            g = _net_grad(x, y, p)
            p = {k: p[k] - lr * g[k] for k in p}
        return p

    def _random_params(rng):
        return {"a1": rng.normal(0, 1, 80), "b1": rng.uniform(-3, 3, 80), "a2": rng.normal(0, 0.3, 80),
                "b2": float(rng.normal())}

    def _close(found, expected, rtol=1e-5):
        if isinstance(expected, dict):
            return set(found) == set(expected) and all(_close(found[k], expected[k], rtol) for k in expected)
        return _np.allclose(_np.asarray(found, dtype=float), expected, rtol=rtol, atol=1e-12)
''')

# (grade id, points, hidden, source): one per check of solutions/gradient_descent.py
TESTS = (
    ("linear-grad", 2, True, '''
        _rng = _np.random.default_rng(1)
        for _ in range(3):
            _n = int(_rng.integers(20, 60))
            _x, _y = _rng.normal(0, 2, _n), _rng.normal(0, 3, _n)
            _a, _b = (float(v) for v in _rng.normal(0, 2, 2))
            assert _close(linear_grad(_x, _y, _a, _b), _line_grad(_x, _y, _a, _b), rtol=1e-6)'''),
    ("fit-linear", 2, False, '''
        _rng = _np.random.default_rng(2)
        _x = _rng.uniform(-2, 2, 200)
        _y = 3 * _x + 4 + _rng.normal(0, 0.3, 200)
        _a, _b = fit_linear(_x, _y, lr=0.1, n_iter=500)
        assert abs(_a - 3) < 0.1 and abs(_b - 4) < 0.1'''),
    ("fit-linear-steps", 1, True, '''
        _rng = _np.random.default_rng(3)
        _x = _rng.uniform(-2, 2, 50)
        _y = 3 * _x + 4 + _rng.normal(0, 0.3, 50)
        assert _close(fit_linear(_x, _y), _line_descent(_x, _y, 0.1, 30, 1.0, 2.0), rtol=1e-6)
        assert _close(fit_linear(_x, _y, lr=0.05, n_iter=7, a0=-0.5, b0=0.25),
                      _line_descent(_x, _y, 0.05, 7, -0.5, 0.25), rtol=1e-6)'''),
    ("mlp-forward", 2, False, '''
        _rng = _np.random.default_rng(4)
        _p = _random_params(_rng)
        _x = _rng.normal(0, 2, 37)
        assert _close(mlp_forward(_x, _p), _forward(_x, _p), rtol=1e-6)'''),
    ("mlp-grad", 3, True, '''
        _rng = _np.random.default_rng(5)
        for _ in range(2):
            _p = _random_params(_rng)
            _n = int(_rng.integers(25, 60))
            _x, _y = _rng.uniform(-3, 3, _n), _rng.normal(0, 1, _n)
            assert _close(mlp_grad(_x, _y, _p), _net_grad(_x, _y, _p))'''),
    ("fit-mlp", 2, False, '''
        _rng = _np.random.default_rng(6)
        _x = _rng.uniform(-3, 3, 200)
        _y = _np.sin(_x) + _rng.normal(0, 0.1, 200)
        _p = _random_params(_rng)
        _p["a2"] = _p["a2"] / 3
        _fitted = fit_mlp(_x, _y, _p, 0.005, 2000)
        assert _np.mean((_forward(_x, _fitted) - _y) ** 2) < 0.03'''),
    ("fit-mlp-steps", 1, True, '''
        _rng = _np.random.default_rng(7)
        _x = _rng.uniform(-3, 3, 40)
        _y = _np.sin(_x) + _rng.normal(0, 0.1, 40)
        _p = _random_params(_rng)
        assert _close(fit_mlp(_x, _y, _p, 0.003, 3), _net_descent(_x, _y, _p, 0.003, 3))'''),
    ("numpy-only", 1, False, '''
        import sys as _sys
        assert "torch" not in _sys.modules'''),
)


def _nbgrader_meta(grade_id: str, *, grade: bool, solution: bool, locked: bool, points: float = 0) -> dict:
    meta = {"grade": grade, "grade_id": grade_id, "locked": locked, "schema_version": 3, "solution": solution,
            "task": False}
    if grade:
        meta["points"] = points
    return meta


def nbgrader_source() -> nbformat.NotebookNode:
    """The reference solution without demo cells, function cells as solution cells, then the tests."""
    notebook = nbformat.read(SOLUTION, as_version=4)
    notebook.cells = [c for c in notebook.cells if not _is_demo(c)]
    for cell in notebook.cells:
        name = next((f for f in FUNCTIONS if _defines(cell, f)), None)
        if name is not None:
            cell.metadata["nbgrader"] = _nbgrader_meta(name, grade=False, solution=True, locked=False)
    reference = nbformat.v4.new_code_cell(REFERENCE_CELL)
    reference.metadata["nbgrader"] = _nbgrader_meta("reference", grade=False, solution=False, locked=True)
    notebook.cells.append(reference)
    for grade_id, points, hidden, source in TESTS:
        body = textwrap.dedent(source).strip("\n")
        if hidden:
            body = f"### BEGIN HIDDEN TESTS\n{body}\n### END HIDDEN TESTS"
        cell = nbformat.v4.new_code_cell(body)
        cell.metadata["nbgrader"] = _nbgrader_meta(f"test-{grade_id}", grade=True, solution=False, locked=True,
                                                   points=points)
        notebook.cells.append(cell)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def as_nbgrader_submission(release: nbformat.NotebookNode, student: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The release notebook with the student's own function cells in its solution cells."""
    submitted = nbformat.from_dict(release)
    for cell in submitted.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            cell.source = next(c.source for c in student.cells if _defines(c, meta["grade_id"]))
    return submitted


def nbgrader_env(cache: Path) -> Path:
    """nbgrader 0.9.6's virtual environment under `cache`, made once; its bin directory."""
    venv = cache / "nbgrader-0.9.6"
    stamp = venv / ".complete"
    if not stamp.exists():
        python = shutil.which("python3.11") or sys.executable
        shutil.rmtree(venv, ignore_errors=True)
        print(f"installing {NBGRADER} into {venv} (once) ...", file=sys.stderr, flush=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", NBGRADER, *NBGRADER_EXTRAS], check=True)
        stamp.write_text(NBGRADER + "\n")
    return venv / "bin"


def nbgrader_course(root: Path, bin_dir: Path, notebooks: dict[str, nbformat.NotebookNode]) -> Path:
    """A course directory with the assignment generated and every student's submission in place."""
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    (root / "nbgrader_config.py").write_text(textwrap.dedent('''\
        c = get_config()
        c.CourseDirectory.course_id = "bench"
        c.ExecutePreprocessor.timeout = 300
    '''))
    name = SOLUTION.name
    nbformat.write(nbgrader_source(), root / "source" / ASSIGNMENT / name)
    subprocess.run([str(bin_dir / "nbgrader"), "generate_assignment", ASSIGNMENT, "--force"], cwd=root,
                   check=True, capture_output=True, env=_nbgrader_environ(bin_dir))
    shutil.copy(root / "gradebook.db", root / "gradebook.generated.db")  # each run starts from it
    release = nbformat.read(root / "release" / ASSIGNMENT / name, as_version=4)
    for student, notebook in notebooks.items():
        folder = root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(as_nbgrader_submission(release, notebook), folder / name)
    return root


def _nbgrader_environ(bin_dir: Path) -> dict[str, str]:
    """nbgrader's own Python and kernel, not this environment's."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "JUPYTER_PATH")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["JUPYTER_PATH"] = str(bin_dir.parent / "share" / "jupyter")
    return env


def run_nbgrader(course: Path, bin_dir: Path) -> float:
    shutil.rmtree(course / "autograded", ignore_errors=True)
    shutil.copy(course / "gradebook.generated.db", course / "gradebook.db")
    start = time.perf_counter()
    done = subprocess.run([str(bin_dir / "nbgrader"), "autograde", ASSIGNMENT, "--force"], cwd=course,
                          capture_output=True, text=True, env=_nbgrader_environ(bin_dir))
    elapsed = time.perf_counter() - start
    graded = len(list((course / "autograded").glob(f"*/{ASSIGNMENT}/*.ipynb")))
    if done.returncode != 0 or graded != 20:
        raise SystemExit(f"nbgrader autograde failed ({graded} graded):\n{done.stderr[-3000:]}")
    return elapsed


def nbgrader_scores(course: Path, bin_dir: Path) -> dict[str, float]:
    script = ("from nbgrader.api import Gradebook\n"
              "with Gradebook('sqlite:///gradebook.db') as gb:\n"
              f"    print({{s.student.id: s.score for s in gb.assignment_submissions('{ASSIGNMENT}')}})")
    done = subprocess.run([str(bin_dir / "python"), "-c", script], cwd=course, capture_output=True, text=True,
                          check=True, env=_nbgrader_environ(bin_dir))
    return eval(done.stdout)  # a dict literal printed by the line above


# --------------------------------------------------------------------------
# The grader, and a bare nbclient run


def run_batch(submissions_dir: Path, out: Path, jobs: int, *extra: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", "batch", str(submissions_dir), "--assignment", "gradient-descent",
                    "--out", str(out), "-j", str(jobs), "--device", "cpu", *extra], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_grade(notebook: Path, out: Path, *extra: str) -> tuple[float, float]:
    """The whole process's seconds, and the part before and after grading (result.json's total_s)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", "grade", str(notebook), "--assignment", "gradient-descent",
                    "--out", str(out), "--device", "cpu", *extra], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    return wall, wall - json.loads((out / "result.json").read_text())["timings"]["total_s"]


def render_seconds(out: Path) -> list[float]:
    """Rendering every output of each result (what a batch does per submission), in this process."""
    from grader.reports.outputs import render_outputs
    from grader.results import GradeResult

    results = [GradeResult.from_dict(json.loads(p.read_text())) for p in sorted(out.glob("*/result.json"))]
    render_outputs(results[0])  # imports and template compilation are paid once per process
    seconds = []
    for result in results:
        start = time.perf_counter()
        render_outputs(result)
        seconds.append(time.perf_counter() - start)
    return seconds


BARE_NBCLIENT = textwrap.dedent('''\
    import sys
    import nbformat
    from nbclient import NotebookClient
    notebook = nbformat.read(sys.argv[1], as_version=4)
    notebook.cells = [c for c in notebook.cells if "demo" not in c.metadata.get("tags", [])]
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
''')


def run_bare(notebook: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", BARE_NBCLIENT, str(notebook)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def timings_of(out: Path) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for path in sorted(out.glob("*/result.json")):
        for name, seconds in json.loads(path.read_text()).get("timings", {}).items():
            found.setdefault(name, []).append(seconds)
    return found


# --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of grader grade and of bare nbclient")
    parser.add_argument("--batch-repeat", type=int, default=1, help="runs of each batch (nbgrader, -j 1, -j 2)")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "grader-bench",
                        help="where nbgrader's environment is made once (default: ~/.cache/grader-bench)")
    args = parser.parse_args()
    bin_dir = nbgrader_env(args.cache)
    notebooks = submissions()
    with tempfile.TemporaryDirectory(prefix="batch-throughput-") as tmp:
        tmp = Path(tmp)
        class_dir = tmp / "class"
        class_dir.mkdir()
        for student, notebook in notebooks.items():
            nbformat.write(notebook, class_dir / f"{student}.ipynb")
        course = nbgrader_course(tmp / "nbgrader-course", bin_dir, notebooks)
        series: dict[str, list[float]] = {"nbgrader autograde (20)": [], "grader batch -j 1 (20)": [],
                                          "grader batch -j 2 (20)": [], "-j 1 --cold-kernels (20)": [],
                                          "grader grade (1)": [], "grade --cold-kernels (1)": [],
                                          "bare nbclient (1)": []}
        process_start: list[float] = []
        for _ in range(args.batch_repeat):  # interleaved
            series["nbgrader autograde (20)"].append(run_nbgrader(course, bin_dir))
            series["grader batch -j 1 (20)"].append(run_batch(class_dir, tmp / "out-j1", 1))
            series["grader batch -j 2 (20)"].append(run_batch(class_dir, tmp / "out-j2", 2))
            series["-j 1 --cold-kernels (20)"].append(run_batch(class_dir, tmp / "out-cold", 1, "--cold-kernels"))
        for _ in range(args.repeat):
            wall, outside = run_grade(SOLUTION, tmp / "out-grade")
            series["grader grade (1)"].append(wall)
            process_start.append(outside)
            series["grade --cold-kernels (1)"].append(run_grade(SOLUTION, tmp / "out-grade-cold", "--cold-kernels")[0])
            series["bare nbclient (1)"].append(run_bare(SOLUTION))
        per_submission = timings_of(tmp / "out-j1")
        cold_per_submission = timings_of(tmp / "out-cold")
        per_submission["rendering (in process)"] = render_seconds(tmp / "out-j1")
        per_submission["grade: outside total_s"] = process_start
        scores = {"nbgrader": nbgrader_scores(course, bin_dir),
                  **{name: {p.parent.name: json.loads(p.read_text())["score"]
                            for p in (tmp / out).glob("*/result.json")}
                     for name, out in (("grader", "out-j1"), ("-j 2", "out-j2"), ("cold", "out-cold"))}}

    medians = {name: statistics.median(values) for name, values in series.items()}
    print(f"\n{'series':28s} {'median':>9s}  runs")
    for name, values in series.items():
        per = f"  ({20 / medians[name] * 60:.1f} submissions/min)" if "(20)" in name else ""
        print(f"{name:28s} {medians[name]:8.2f}s  {', '.join(f'{v:.2f}' for v in values)}{per}")
    print("\nper submission (medians; result.json timings over the 20 of each -j 1 batch):")
    print(f"  {'':24s} {'image':>8s} {'cold':>8s}")
    for name in per_submission:
        cold = cold_per_submission.get(name)
        print(f"  {name:24s} {statistics.median(per_submission[name]):7.3f}s "
              + (f"{statistics.median(cold):7.3f}s" if cold else ""))
    overhead = sum(statistics.median(per_submission.get(n, [0.0]))
                   for n in ("resources_s", "sandbox_s", "kernel_start_s", "rendering (in process)"))
    print(f"  overhead in a batch (resources + sandbox + kernel start + rendering): {overhead:.3f}s of "
          f"{medians['grader batch -j 1 (20)'] / 20:.3f}s per submission at -j 1")
    ratios = {"-j 2 / nbgrader (throughput)": medians["nbgrader autograde (20)"] / medians["grader batch -j 2 (20)"],
              "-j 2 / -j 1 (throughput)": medians["grader batch -j 1 (20)"] / medians["grader batch -j 2 (20)"],
              "grader grade / bare nbclient (time)": medians["grader grade (1)"] / medians["bare nbclient (1)"],
              "-j 1 image / cold (throughput)": medians["-j 1 --cold-kernels (20)"] / medians["grader batch -j 1 (20)"],
              "grade cold / image (time)": medians["grade --cold-kernels (1)"] / medians["grader grade (1)"]}
    print("\nratios (goal):")
    for name, value in ratios.items():
        if name not in GOALS:
            print(f"  {name:38s} {value:5.2f}")
            continue
        sense, goal = GOALS[name]
        met = value >= goal if sense == ">=" else value <= goal
        print(f"  {name:38s} {value:5.2f}  (goal {sense} {goal}: {'met' if met else 'missed'})")
    print("\nscores by kind (nbgrader points / grader points):")
    for kind, students in (("correct", range(1, 11)), ("sign error", range(11, 16)), ("template", range(16, 21))):
        ids = [f"s{i:02d}" for i in students]
        print(f"  {kind:10s} nbgrader {sorted({scores['nbgrader'].get(s) for s in ids})}  "
              f"grader {sorted({scores['grader'].get(s) for s in ids})}")
    print(f"  grader's scores identical in -j 1, -j 2 and --cold-kernels: "
          f"{scores['grader'] == scores['-j 2'] == scores['cold'] and len(scores['grader']) == 20}")
    print(f"\nmachine: {os.cpu_count()} cores; nbgrader {NBGRADER.split('==')[1]} in {bin_dir.parent}")


if __name__ == "__main__":
    main()
