"""The package reads as the pipeline, and its imports run one way.

Each stage of grader/ has a level; a module may import from its own stage and from stages below it,
never from one above. Every import counts: at the top, inside a function, or only for type checking.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "grader"

# lowest first: a stage may import only from its own level and the levels before it
LEVELS = (
    ("grader", "grader.errors", "grader.states", "grader.scoring", "grader.results", "grader.locations",
     "grader.files", "grader.compat"),
    ("grader.child",),  # runs in the student's kernel: imports nothing of the grader at all
    ("grader.intake",),
    ("grader.sandbox",),  # the only place that starts processes
    ("grader.kernel",),
    ("grader.ml",),  # pure: no check context, no points
    ("grader.checks",),  # the only grading stage that asks the student's kernel for values
    ("grader.course",),  # the door for course authors
    ("grader.reports",),
    ("grader.grading",),
    ("grader.lms",),
    ("grader.service",),  # grader serve: the database, the queue, the web application
    ("grader.cli", "grader.student", "grader.__main__"),  # the doors for TAs and students
)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    """The longest stage name that is `module` or a package above it."""
    stages = [stage for level in LEVELS for stage in level if module == stage or module.startswith(stage + ".")]
    return max(stages, key=len)


LEVEL_OF = {stage: level for level, stages in enumerate(LEVELS) for stage in stages}


def grader_imports(path: Path) -> set[str]:
    """Every grader module `path` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "grader")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "grader":
            # `from grader.reports import plots` imports the module grader.reports.plots
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").is_file()
                found.add(candidate if is_module else node.module)
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {module: grader_imports(path) for module, path in MODULES.items()}


def test_every_module_belongs_to_a_stage():
    assert all(stage_of(module) for module in MODULES)
    assert not [p for p in PACKAGE.glob("*.py") if module_name(p) not in LEVEL_OF], \
        "a new top-level module: give it a stage in LEVELS (or put it in one)"


def test_no_stage_imports_from_a_stage_above_it():
    upward = [f"{module} (level {LEVEL_OF[stage_of(module)]}) imports {target} "
              f"(level {LEVEL_OF[stage_of(target)]})"
              for module, targets in GRAPH.items() for target in targets
              if LEVEL_OF[stage_of(target)] > LEVEL_OF[stage_of(module)]]
    assert upward == []


def test_the_child_imports_nothing_of_the_grader():
    # it runs inside the student's kernel, from a copy of grader/child only
    assert {module: targets for module, targets in GRAPH.items()
            if module.startswith("grader.child") and targets} == {}


def test_ml_is_pure_it_asks_no_kernel_and_gives_no_points():
    # the checks ask the student's kernel and score; ml computes (graphs, training, metrics, baselines)
    assert {module: sorted(t for t in targets if stage_of(t) in ("grader.kernel", "grader.scoring"))
            for module, targets in GRAPH.items()
            if stage_of(module) == "grader.ml" and any(stage_of(t) in ("grader.kernel", "grader.scoring")
                                                        for t in targets)} == {}


def test_no_import_cycle_between_modules():
    state: dict[str, str] = {}
    cycles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if target not in MODULES:
                continue
            if state.get(target) == "open":
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [module])
    # a package's __init__ that lists its modules may be imported by them without a cycle in practice,
    # but none here does: any cycle is a real one
    assert cycles == []


def test_the_checker_sees_an_upward_import(tmp_path):
    # the test above would pass vacuously if grader_imports missed lazy or type-only imports
    source = tmp_path / "example.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from grader.grading import batch\n"
                      "def f():\n    import grader.cli\n    from grader.ml.task import ModelTask\n")
    assert grader_imports(source) == {"grader.grading.batch", "grader.cli", "grader.ml.task"}
