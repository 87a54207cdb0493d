"""Grading the deep-mlp reference against a plain PyTorch script doing the same training.

Run by hand: `GRADER_DATA=../shared/data python benchmarks/train_deep_mlp.py [--repeat 3]
[--baseline-checkout DIR] [--batch N]`. With --baseline-checkout (another checkout of the
grader, e.g. `git worktree add /tmp/before <commit>`), that version grades
the same notebook in the same interleaved run, for a before/after ratio.
With --batch N it also grades N copies of the reference with `grader batch -j 1`
and `-j 2` and runs the plain script N times in a row, and prints the
throughputs (models a minute) and their ratios.

Both sides train the reference architecture (784-512-256-10, ReLU) with Adam
at 1e-3 for 10 epochs of batch 64, evaluate on the test set after every
epoch, use the same number of threads, and run in a fresh process. The
script prints medians and the ratios measured in the same run (interleaved:
compare ratios, not seconds, on a shared machine), for the whole process, the
training loop and the rest (the whole less the loop). Target (issue #24): the
whole `grader grade` command within 10 % of the plain script.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
THREADS = str(max(1, min(os.cpu_count() or 1, 8)))

PLAIN = r"""
import sys, time
start = time.perf_counter()
import torch, torch.nn as nn, torch.nn.functional as F, torchvision
root = sys.argv[1]
train = torchvision.datasets.MNIST(root, train=True, download=False)
test = torchvision.datasets.MNIST(root, train=False, download=False)
x = train.data.float().div(255).reshape(-1, 784); y = train.targets
xt = test.data.float().div(255).reshape(-1, 784); yt = test.targets
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
generator = torch.Generator().manual_seed(0)
train_start = time.perf_counter()
for epoch in range(10):
    order = torch.randperm(len(x), generator=generator)
    for i in range(0, len(x), 64):
        batch = order[i:i + 64]
        loss = F.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    with torch.no_grad():
        accuracy = (model(xt).argmax(1) == yt).float().mean().item()
print(f"{time.perf_counter() - train_start} {accuracy}")
"""


def plain(data_root: str) -> tuple[float, float]:
    env = {**os.environ, "OMP_NUM_THREADS": THREADS, "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PLAIN, data_root], check=True, capture_output=True, text=True,
                          env=env)
    total = time.perf_counter() - start
    return total, float(done.stdout.split()[0])


def graded(data_root: str, out: Path, checkout: Path = REPO) -> tuple[float, float]:
    """`grader grade` of the deep-mlp reference by the grader in `checkout` (run from there, so its
    package is the one imported)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", "grade", str(checkout / "solutions" / "deep_mlp.ipynb"),
                    "--out", str(out), "--data-root", data_root, "--device", "cpu", "--course", str(checkout)],
                   check=True, stdout=subprocess.DEVNULL, cwd=checkout, env={**os.environ, "PYTHONPATH": str(checkout)})
    total = time.perf_counter() - start
    result = json.loads((out / "result.json").read_text())
    training = next(c for c in result["checks"] if c["id"] == "test-accuracy")["details"]["training"]
    assert result["score"] == result["max_score"], result["score"]
    return total, training["wall_s"]


def batch_throughput(data_root: str, copies: int, tmp: Path) -> None:
    """N deep-mlp submissions: `grader batch -j 1` and `-j 2` against N plain scripts in a row."""
    folder = tmp / "class"
    folder.mkdir()
    for i in range(copies):
        (folder / f"student{i:02d}.ipynb").write_bytes((REPO / "solutions" / "deep_mlp.ipynb").read_bytes())
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    for _ in range(copies):
        plain(data_root)
    seconds["plain script x N"] = time.perf_counter() - start
    for jobs in (1, 2):
        out = tmp / f"batch-j{jobs}"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "grader", "batch", str(folder), "--assignment", "deep-mlp",
                        "--out", str(out), "-j", str(jobs), "--data-root", data_root, "--device", "cpu",
                        "--course", str(REPO)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds[f"grader batch -j {jobs}"] = time.perf_counter() - start
        scores = {json.loads(p.read_text())["score"] for p in out.glob("*/result.json")}
        assert len(list(out.glob("*/result.json"))) == copies and scores == {10.0}, scores
    base = seconds["plain script x N"]
    for name, total in seconds.items():
        print(f"{name:18s} {copies} models in {total:6.1f} s: {60 * copies / total:5.1f} a minute "
              f"({base / total:4.2f}x the plain scripts' throughput)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data-root", default=os.environ.get("GRADER_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--baseline-checkout", type=Path, default=None,
                        help="another checkout of the grader to grade the same notebook in the same run")
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="also grade N copies with grader batch -j 1 and -j 2 against N plain scripts")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {"plain script": [], "grader grade": []}
    if args.baseline_checkout:
        runs["baseline grade"] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            runs["plain script"].append(plain(args.data_root))
            runs["grader grade"].append(graded(args.data_root, Path(tmp)))
            if args.baseline_checkout:
                runs["baseline grade"].append(graded(args.data_root, Path(tmp), args.baseline_checkout.resolve()))
    # the rest: everything but the training loop (start, imports, data, the notebook, checks, feedback), which
    # a shared machine's noise in the loop itself does not drown
    medians = {name: (statistics.median(t for t, _ in values), statistics.median(w for _, w in values),
                      statistics.median(t - w for t, w in values))
               for name, values in runs.items()}
    base_total, base_train, base_rest = medians["plain script"]
    for name, (total, train, rest) in medians.items():
        print(f"{name:14s} whole process {total:6.1f} s ({total / base_total:4.2f}x)   "
              f"training loop {train:6.1f} s ({train / base_train:4.2f}x)   "
              f"the rest {rest:5.2f} s ({rest / base_rest:4.2f}x)   "
              f"runs: {', '.join(f'{t:.1f}' for t, _ in runs[name])}")
    if args.batch:
        with tempfile.TemporaryDirectory() as tmp:
            batch_throughput(args.data_root, args.batch, Path(tmp))


if __name__ == "__main__":
    main()
