"""`check()` in a student's own notebook: the assignment's visible checks, in the student's kernel.

    from grader.student import check, submit
    check()              # all visible checks
    check("fit-linear")  # one
    submit(to="https://grader.example.edu/")  # the saved notebook, to the course's grading service

It reads the student bundle beside the notebook (NAME.checks.json, see
grader/course/bundle.py) and runs each visible check the way the grader does: the
same calls with the same inputs, answers converted to data the same way, the
same judges and rules, so a check passes here exactly when it passes in
grading. It runs in the student's kernel, on their machine: no sandbox, and
nothing of theirs changes (random states, variables, plots). What it cannot
do here is said, not faked: checks that need torch hidden, and the grader's
training (`grader check NOTEBOOK` runs those, with a training preview).
"""

from __future__ import annotations

import contextlib
import copy
import html
import importlib
import inspect
import os
import random
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grader.checks.context import CallSpec, CheckContext
from grader.course.bundle import AFTER_SUBMITTING, assignment_from_bundle, find_bundle, read_bundle
from grader.errors import GraderError, StudentError
from grader.ml.analysis import Analysis, analyze_rebuild
from grader.ml.graph import ModelGraph
from grader.ml.task import ModelTask
from grader.results import CheckResult
from grader.scoring import Outcome, points, status_of
from grader.states import CheckStatus

NOT_HERE = "checked by `grader check` and after you submit"


class _Exchange:
    """Where answers are written and read back, as in grading, in a private temporary directory."""

    def __init__(self, directory: Path):
        self.exchange = directory
        self.exchange_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        self.threads = 1
        self.limits = None

    def new_output_dir(self, name: str) -> Path:
        path = self.exchange / name
        path.mkdir()
        return path

    def close(self) -> None:
        os.close(self.exchange_fd)


class LocalContext(CheckContext):
    """A CheckContext whose 'kernel' is the student's own namespace, in this process."""

    def __init__(self, namespace: dict, exchange: _Exchange, *, seed: int):
        super().__init__(runner=None, sandbox=exchange, seed=seed, device="cpu")
        self.namespace = namespace

    def _ask(self, module: str, function: str, args: tuple[str, ...], *, what: str, timeout_s: float | None,
             **_: Any) -> Any:
        out_name = self._output_name()
        helper = importlib.import_module(f"grader.child.{module}")
        getattr(helper, function)(self.namespace, *args, str(self.sandbox.exchange / out_name))
        return self._read_answer(out_name, what)

    def _call_in_one_cell(self, calls: Sequence[CallSpec], *, keep_going: bool, timeout_s: float | None) -> list[Any]:
        """No kernel to save round trips to: one call at a time."""
        try:
            return [self._call(calls[0], timeout_s=timeout_s)]
        except StudentError as exc:
            return [exc]

    def _readable(self, traceback: list[str]) -> list[str]:
        return traceback

    def analyze_model(self, graph: ModelGraph, task: ModelTask,
                      probes: dict[str, np.ndarray]) -> tuple[str, Analysis]:
        """Here: the student's own kernel has torch already, and no trainer runs beside it."""
        return analyze_rebuild(graph, task, probes, seed=self.seed)


def check(check_id: str | None = None, *, bundle: str | Path | None = None, namespace: dict | None = None):
    """Run the visible checks (or the one named) on the notebook this is called from; show a table."""
    if namespace is None:
        frame = inspect.currentframe()
        caller = frame.f_back if frame is not None else None
        assert caller is not None, "check() is called from a notebook's code"
        namespace = caller.f_globals
    try:
        data = read_bundle(Path(bundle) if bundle else find_bundle(Path.cwd() / "notebook.ipynb", None))
    except GraderError as exc:  # the command line's advice, in this function's own spelling
        print("check: " + exc.message.replace("pass --bundle", 'pass check(bundle="NAME.checks.json")'))
        return None
    assignment = assignment_from_bundle(data)
    selected = [c for c in assignment.checks if check_id in (None, c.id)]
    if not selected:
        known = ", ".join(c.id for c in assignment.checks)
        print(f"check: no check {check_id!r} in {data['assignment']} (its checks: {known})")
        return None
    with _untouched(), tempfile.TemporaryDirectory(prefix="grader-check-") as folder:
        exchange = _Exchange(Path(folder))
        try:
            context = LocalContext(namespace, exchange, seed=data["seed"])
            results = [_run(c, context, blocked=data.get("blocked_modules", [])) for c in selected]
        finally:
            exchange.close()
    report = Report(data["assignment"], results)
    _show(report)
    return report


def submit(notebook: str | Path | None = None, *, to: str | None = None, token: str | None = None,
           wait: bool = True):
    """Submit the notebook this is called from (as last saved) to the course's grading service
    (`grader serve`): print its score and feedback link once graded, and return the record.

    `to` defaults to GRADER_SERVICE and `token` to GRADER_TOKEN; the token is on the service's page."""
    from grader.intake.submit import write_submission
    from grader.service.client import submit_to_service

    url, token = to or os.environ.get("GRADER_SERVICE"), token or os.environ.get("GRADER_TOKEN")
    try:
        if not url or not token:
            raise GraderError("say where and who: submit(to=\"https://…\", token=\"…\") (or set GRADER_SERVICE and "
                              "GRADER_TOKEN); your token is on the grading service's page")
        path = Path(notebook) if notebook else this_notebook()
        if not path.is_file():
            raise GraderError(f"{path}: no such notebook (save it first, or pass submit(notebook=\"NAME.ipynb\"))")
        with tempfile.TemporaryDirectory(prefix="grader-submit-") as folder:
            try:  # with the bundle beside it: outputs cleared and the assignment named, as `grader check --submit`
                bundle = read_bundle(find_bundle(path, None))
                upload = write_submission(path, bundle, Path(folder) / path.name)
            except GraderError:
                bundle, upload = None, path
            print(f"submitting {path.name} as last saved ({_saved_ago(path)})")
            outcome = submit_to_service(upload, url, token, assignment=bundle["assignment"] if bundle else None,
                                        wait=wait, progress=print)
    except GraderError as exc:
        print("submit: " + exc.message)
        return None
    print(outcome.describe())
    return outcome


def this_notebook() -> Path:
    """The notebook file of the running kernel, as Jupyter (JPY_SESSION_NAME, __session__) or VS Code
    (__vsc_ipynb_file__) names it."""
    import __main__

    for found in (os.environ.get("JPY_SESSION_NAME"), getattr(__main__, "__session__", None),
                  getattr(__main__, "__vsc_ipynb_file__", None)):
        if found and str(found).endswith(".ipynb"):
            return Path(found)
    raise GraderError("this kernel does not say which notebook it runs: pass submit(notebook=\"NAME.ipynb\")")


def _saved_ago(path: Path) -> str:
    import time

    seconds = max(0, time.time() - path.stat().st_mtime)
    if seconds < 120:
        return f"saved {seconds:.0f} s ago"
    return f"saved {seconds / 60:.0f} min ago: save first if you changed it since"


def _run(check, context: LocalContext, *, blocked: list[str]) -> CheckResult:
    replay = check.run
    if check.visibility == "hidden":
        outcome = Outcome.skipped(AFTER_SUBMITTING)
    elif "blocked-modules" in getattr(replay, "needs", ()):
        outcome = Outcome.skipped(f"{NOT_HERE}: it needs {', '.join(blocked)} hidden, as the grader does")
    elif type(replay).__name__ == "ModelScore":
        outcome = Outcome.skipped(f"{NOT_HERE}: `grader check NOTEBOOK` previews the grader's training")
    else:
        try:
            outcome = replay(context)
        except StudentError as exc:
            outcome = Outcome.failed(exc.message)
        except Exception as exc:  # a check here must not break the student's notebook
            outcome = Outcome.error(f"this check could not run here ({type(exc).__name__}: {exc}); "
                                    "`grader check NOTEBOOK` runs it as the grader does")
    return CheckResult(id=check.id, name=check.name, score=points(outcome, check.points),
                       max_score=float(check.points), status=status_of(outcome), message=outcome.message,
                       visibility=check.visibility, hint=check.hint)


@contextlib.contextmanager
def _untouched():
    """Random states, the working directory, and matplotlib's figures as they were."""
    states = [random.getstate(), np.random.get_state()]
    torch = _module("torch")
    torch_state = torch.get_rng_state() if torch else None
    pyplot = _module("matplotlib.pyplot")
    figures = set(pyplot.get_fignums()) if pyplot else set()
    params = copy.deepcopy(dict(pyplot.rcParams)) if pyplot else None
    cwd = os.getcwd()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        if torch is not None:
            torch.set_rng_state(torch_state)
        if pyplot is not None:
            for number in set(pyplot.get_fignums()) - figures:
                pyplot.close(number)
            pyplot.rcParams.update(params)
        os.chdir(cwd)


def _module(name: str):
    import sys

    return sys.modules.get(name)


class Report:
    """What check() found; shown as an HTML table in Jupyter and as text elsewhere."""

    def __init__(self, assignment: str, results: list[CheckResult]):
        self.assignment = assignment
        self.results = results
        self._shown = False

    def _ipython_display_(self) -> None:
        """Shown once: check() shows it, and a cell that ends with check() would show it again."""
        if self._shown:
            return
        self._shown = True
        from IPython.display import display

        display({"text/html": self._repr_html_(), "text/plain": self.text()}, raw=True)

    @property
    def passed(self) -> bool:
        return all(r.status in (CheckStatus.PASSED, CheckStatus.SKIPPED) for r in self.results)

    def text(self) -> str:
        width = max(len(r.id) for r in self.results)
        lines = [f"{self.assignment}: visible checks on this notebook"]
        for r in self.results:
            lines.append(f"  {r.id:<{width}}  {r.status:<7}  {r.score:g}/{r.max_score:g}  {r.message}")
        lines.append("Hidden checks and the grader's training run after you submit: the final grade can differ.")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colours = {"passed": "#1a7f37", "failed": "#cf222e", "error": "#9a6700", "skipped": "#57606a"}
        rows = "".join(
            f"<tr><td><code>{html.escape(r.id)}</code></td>"
            f"<td style='color:{colours.get(r.status, 'black')}'>{html.escape(r.status)}</td>"
            f"<td>{r.score:g}/{r.max_score:g}</td><td>{html.escape(r.message)}</td></tr>" for r in self.results)
        return (f"<p><b>{html.escape(self.assignment)}</b>: visible checks on this notebook</p>"
                f"<table><tr><th>check</th><th>status</th><th>points</th><th>message</th></tr>{rows}</table>"
                "<p>Hidden checks and the grader's training run after you submit: the final grade can differ.</p>")

    def __repr__(self) -> str:
        return self.text()


def _show(report: Report) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(report)
            return
    except ImportError:
        pass
    print(report.text())

