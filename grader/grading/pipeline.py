"""Grade one submission: notebook → sandboxed execution → checks → result.

Nothing a submission does makes `grade_submission` raise: a broken notebook,
a crashing kernel or a failing check all become a result with a score and
messages. Only a broken grader installation (HarnessError) propagates.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import platform
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import grader
from grader.checks.catalog import ModelRule, ModelScore
from grader.checks.context import CheckContext
from grader.child import protocol
from grader.course.assignment import Assignment, Check
from grader.errors import GraderError, GraderFailure, NotebookError, StudentError
from grader.grading.options import GradeOptions
from grader.grading.warm import Warm
from grader.intake.notebooks import code_cells, read_submission, sha256_of, skipped_cells
from grader.kernel.execution import Deadline, NotebookRunner
from grader.kernel.session import KernelSession
from grader.ml.training import training_setup
from grader.reports.plain import printable
from grader.results import CheckResult, GradeResult
from grader.sandbox.exchange import write_value
from grader.sandbox.jail import Sandbox
from grader.scoring import Outcome, points, status_of
from grader.states import LIMIT_KINDS, CheckStatus, ResultStatus

log = logging.getLogger(__name__)


def grade_safely(path: Path, assignment: Assignment, options: GradeOptions, warm: Warm) -> GradeResult:
    """`grade_submission`, with anything unexpected turned into an error result that says so: one
    submission can stop neither `grader grade` nor a batch. A broken installation (HarnessError) still
    stops the grader, because it would fail every submission the same way."""
    try:
        return grade_submission(path, assignment, options, warm)
    except GraderError:
        raise
    except GraderFailure as exc:
        log.warning("the grader could not finish %s: %s", printable(Path(path).name), exc.message)
        return grader_failure(path, assignment, options, exc.message)
    except Exception as exc:
        log.error("grading %s crashed:\n%s", printable(Path(path).name), printable(traceback.format_exc(),
                                                                                   limit=20_000))
        return grader_failure(path, assignment, options, f"the grader crashed on this submission "
                                                         f"({type(exc).__name__}: {printable(exc, limit=300)})")


def grader_failure(path: Path, assignment: Assignment, options: GradeOptions, why: str) -> GradeResult:
    """The result of a submission the grader could not finish: no grade, a status that says whose problem
    it is, and no digest, so that a batch grades it again next time."""
    message = (f"The grader could not finish grading this submission: {why}. This is not your fault and says "
               "nothing about your work; it will be graded again (tell the course staff if it stays so).")
    result = zero_result(path, assignment, options, message=message, check_message="not graded: the grader "
                         "could not finish (not your fault)", check_status=CheckStatus.ERROR)
    return dataclasses.replace(result, status=ResultStatus.GRADER_ERROR)


def grade_submission(path: Path, assignment: Assignment, options: GradeOptions, warm: Warm) -> GradeResult:
    """Grade the notebook at `path`, with what `warm` keeps between submissions."""
    started = time.monotonic()
    path = Path(path)
    try:
        submission = read_submission(path)
    except NotebookError as exc:
        return unreadable_result(path, assignment, exc.message, options)
    if submission.assignment_hint and submission.assignment_hint != assignment.id:
        # graded as this one, it would score 0 with messages about functions it was never meant to have;
        # only the notebook's own metadata decides (grader assign writes it into every template)
        return unreadable_result(path, assignment, f"This notebook is the one for the assignment "
                                 f"{printable(submission.assignment_hint, limit=80)!r} (its metadata says so), but "
                                 f"this assignment is {assignment.id!r} ({assignment.title}), so it was not graded "
                                 f"as this one. Hand in your notebook {assignment.notebook}.", options)
    resources = warm.resources(assignment, options)
    prepared = time.monotonic()
    limits = assignment.limits
    hidden = () if options.own_code else (options.course_root / "solutions", options.data_root, options.cache_dir,
                                          path.resolve().parent)
    with Sandbox(limits, isolation=options.isolation,
                 blocked_modules=assignment.blocked_modules, hidden_paths=hidden,
                 private_paths=options.private_paths, threads=options.threads,
                 user=options.sandbox_user, own_code=options.own_code,
                 image=warm.image_for(assignment, options)) as sandbox:
        start_trainer(assignment, options, warm)  # started already by `grader grade`; a batch's first here
        sandboxed = time.monotonic()
        deadline = Deadline(limits.total_timeout_s)
        runner = NotebookRunner(KernelSession(sandbox), preamble=_preamble(sandbox, assignment),
                                cell_timeout_s=limits.cell_timeout_s, deadline=deadline)
        try:
            runner.start()
            kernel_ready = time.monotonic()
            report = runner.run_cells(code_cells(submission.notebook))
            report.cells_skipped = skipped_cells(submission.notebook)
            executed = time.monotonic()
            context = CheckContext(runner=runner, sandbox=sandbox, seed=assignment.seed, device=options.device,
                                   resources=resources, cell_problems=len(report.problems), trainers=warm.trainers)
            checks = [run_check(check, context) for check in assignment.checks]
        finally:
            runner.session.stop()
        protections = sandbox.protections()
    finished = time.monotonic()
    # sandbox_s and kernel_start_s are the parts of execute_s that are not the student's cells
    timings = {"resources_s": prepared - started, "execute_s": executed - prepared,
               "sandbox_s": sandboxed - prepared, "kernel_start_s": kernel_ready - sandboxed,
               "checks_s": finished - executed, **context.timings, "total_s": finished - started}
    return GradeResult(
        assignment=assignment.id,
        submission=submission.name,
        submission_sha256=submission.sha256,
        score=round(sum(c.score for c in checks), 2),
        max_score=assignment.max_score,
        status=ResultStatus.GRADED,
        checks=checks,
        environment=environment(options, assignment, protections.to_dict()),
        timings={name: round(seconds, 3) for name, seconds in timings.items()},
        execution={**report.to_dict(), "warnings": list(submission.warnings)},
    )


def run_check(check: Check, context: CheckContext) -> CheckResult:
    """Run one check; a student failure or a bug in the check becomes a result, never an exception."""
    try:
        outcome = check.run(context)
        if not isinstance(outcome, Outcome):
            raise TypeError(f"check returned {type(outcome).__name__}, not an Outcome")
    except GraderFailure:
        raise  # no check's points stand when the grader could not finish: see grade_safely
    except StudentError as exc:
        outcome = Outcome(0.0, exc.message, {"traceback": exc.traceback} if exc.traceback else {},
                          status=CheckStatus.ERROR if exc.kind in LIMIT_KINDS else None)
    except Exception as exc:  # a broken check must not stop the batch
        log.error("check %s crashed:\n%s", check.id, printable(traceback.format_exc(), limit=20_000))
        outcome = Outcome.error(f"the grader's check {check.id} crashed ({type(exc).__name__}: {exc}); "
                                "this is not your fault: tell the course staff")
    return CheckResult(id=check.id, name=check.name, score=points(outcome, check.points),
                       max_score=float(check.points), status=status_of(outcome), message=outcome.message,
                       visibility=check.visibility, details=outcome.details, hint=check.hint)


def unreadable_result(path: Path, assignment: Assignment, message: str, options: GradeOptions) -> GradeResult:
    """Zero on every check, each saying why: the file is not a notebook we can run."""
    try:
        digest = sha256_of(path)
    except OSError:
        digest = ""
    return zero_result(path, assignment, options, message=message, check_message=f"not graded: {message}",
                       check_status=CheckStatus.FAILED, sha256=digest)


def zero_result(path: Path, assignment: Assignment, options: GradeOptions, *, message: str, check_message: str,
                check_status: str, sha256: str = "") -> GradeResult:
    """A submission that could not be graded: every check at zero with the same message.

    An empty sha256 makes a batch grade the submission again next time.
    """
    checks = [CheckResult(id=c.id, name=c.name, score=0.0, max_score=float(c.points), status=check_status,
                          message=check_message, visibility=c.visibility, hint=c.hint) for c in assignment.checks]
    return GradeResult(assignment=assignment.id, submission=Path(path).name, submission_sha256=sha256, score=0.0,
                       max_score=assignment.max_score, status=ResultStatus.ERROR, checks=checks,
                       environment=environment(options, assignment, {}), timings={"total_s": 0.0},
                       message=message)


def _preamble(sandbox: Sandbox, assignment: Assignment) -> str:
    """Source for the kernel's first cell: the grader's helpers, before any student code."""
    reason = "this assignment must not use it" if assignment.blocked_modules else ""
    folder = sandbox.exchange / "prepare"
    folder.mkdir(mode=0o755, exist_ok=True)
    write_value(protocol.to_wire(protocol.Prepare(seed=assignment.seed, blocked_modules=assignment.blocked_modules,
                                                  block_reason=reason, helpers=assignment.child_helpers)), folder)
    return "\n".join([
        f'__import__("sys").path.insert(0, {str(sandbox.childlib)!r})',
        f'__import__("grader_child.prepare").prepare.run({str(folder)!r})',
    ])


def import_in_background(*modules: str) -> None:
    """Import `modules` in a thread, in order, while this process waits on a kernel; whoever needs one
    first waits for its import to finish (Python's import lock)."""
    def run() -> None:
        for module in modules:
            importlib.import_module(module)

    threading.Thread(target=run, daemon=True).start()


def start_trainer(assignment: Assignment, options: GradeOptions, warm: Warm) -> None:
    """Start the assignment's trainer now (none where it trains no model, one already waiting is kept). Its
    imports (torch, and the compiler stack that torch's optimizers and meta tensors load: 2-3 s of CPU) then
    run beside the grader's work and the kernel's instead of after them: the trainer runs the rebuild of the
    model, to inspect it, and trains it, and this process never imports torch."""
    if uses_models(assignment):
        warm.trainers.prepare(training_setup(assignment.limits, threads=options.threads, device=options.device,
                                             seed=assignment.seed))


def uses_models(assignment: Assignment) -> bool:
    return any(isinstance(check.run, (ModelRule, ModelScore)) for check in assignment.checks)


def environment(options: GradeOptions, assignment: Assignment, sandbox: dict[str, Any]) -> dict[str, Any]:
    return {
        "grader": grader.__version__,
        "python": platform.python_version(),
        "torch": _torch_version(),
        "packages": package_versions(),
        "device": options.device,
        "seed": assignment.seed,
        "platform": platform.platform(terse=True),
        "cpu_count": os.cpu_count(),
        "sandbox": sandbox,
    }


# what moves a grade when its version moves: the kernel's stack, the numerics, the baselines
GRADE_PACKAGES = ("numpy", "scikit-learn", "torchvision", "matplotlib", "ipykernel", "jupyter_client", "nbclient")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in GRADE_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _torch_version() -> str:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:
        return "not installed"
