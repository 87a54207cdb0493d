"""How long `grader grade` takes on the gradient-descent solution, against executing the notebook alone.

Run by hand: `python benchmarks/grade_gradient_descent.py [--repeat 5]`. Prints
medians and ratios measured in the same run (these machines are shared and
noisy: compare ratios, not seconds).

- notebook alone: nbclient runs every cell of the solution in a plain local
  kernel, as `jupyter nbconvert --execute` would (demo cells included);
- notebook alone, graded cells: the same without the `demo` cells;
- grader grade: the whole command in a fresh process (interpreter start,
  sandbox, kernel, every check, result.json).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent
SOLUTION = REPO / "solutions" / "gradient_descent.ipynb"


def execute_alone(skip_demo: bool) -> float:
    notebook = nbformat.read(SOLUTION, as_version=4)
    if skip_demo:
        notebook.cells = [c for c in notebook.cells if "demo" not in c.metadata.get("tags", [])]
    start = time.perf_counter()
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    return time.perf_counter() - start


def grade_command(out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", "grade", str(SOLUTION), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    timings: dict[str, list[float]] = {"notebook alone (all cells)": [], "notebook alone (graded cells)": [],
                                       "grader grade (whole command)": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):  # interleaved, so load drifts hit every series alike
            timings["notebook alone (all cells)"].append(execute_alone(skip_demo=False))
            timings["notebook alone (graded cells)"].append(execute_alone(skip_demo=True))
            timings["grader grade (whole command)"].append(grade_command(Path(tmp)))
    base = statistics.median(timings["notebook alone (all cells)"])
    for name, values in timings.items():
        median = statistics.median(values)
        print(f"{name:32s} median {median:6.2f} s  ({median / base:4.2f}x notebook alone)  "
              f"runs: {', '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
