"""Grade one notebook with `--device cpu` and `--device cuda` side by side: same grade, and how long.

Run by hand on a machine with a GPU: `GRADER_DATA=../shared/data python benchmarks/compare_devices.py
[--notebook solutions/deep_mlp.ipynb] [--repeat 2] [--json-out FILE]`. Each run is a fresh
`grader grade` process (whole process timed); devices are interleaved so that a busy machine
slows both alike. The script prints, per device, the score, the graded test accuracy and the
training loop's time from result.json, the whole command's time, and the ratios against cpu
measured in the same run. Without CUDA it runs the cpu side alone and says so.
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
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    device: str
    score: float
    max_score: float
    accuracy: float
    training_s: float
    total_s: float
    sandbox: str


def grade(notebook: Path, device: str, data_root: str, out: Path, extra: list[str]) -> Run:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "grader", "grade", str(notebook), "--out", str(out),
                           "--data-root", data_root, "--device", device, "--course", str(REPO), *extra],
                          capture_output=True, text=True, cwd=REPO)
    total = time.perf_counter() - start
    if done.returncode not in (0, 1):  # 1: graded, not full marks
        raise SystemExit(f"grader grade --device {device} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads((out / "result.json").read_text())
    training = next((c["details"]["training"] for c in result["checks"]
                     if isinstance(c.get("details"), dict) and "training" in c["details"]), None)
    if training is None:
        raise SystemExit(f"{notebook}: no model was trained when grading it (its result has no training "
                         "record); this script compares devices on notebooks whose model the grader trains")
    return Run(device=device, score=result["score"], max_score=result["max_score"],
               accuracy=training["test_accuracy"], training_s=training["wall_s"], total_s=total,
               sandbox=result["environment"]["sandbox"]["isolation"])


def cuda_available() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return probe.stdout.strip() == "True"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, default=REPO / "solutions" / "deep_mlp.ipynb")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--data-root", default=os.environ.get("GRADER_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--json-out", type=Path, default=None, help="also write every run here")
    parser.add_argument("--grader-args", default="", help="more options for grader grade, e.g. '--sandbox user'")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if cuda_available() else ["cpu"]
    if devices == ["cpu"]:
        print("torch sees no CUDA device here: timing --device cpu alone")
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for device in devices if round_ % 2 == 0 else devices[::-1]:
                run = grade(args.notebook.resolve(), device, args.data_root, Path(tmp) / f"{device}-{round_}",
                            args.grader_args.split())
                print(f"  {device:4s} round {round_ + 1}: {run.score:g}/{run.max_score:g}, accuracy {run.accuracy}, "
                      f"training {run.training_s} s, whole command {run.total_s:.1f} s", flush=True)
                runs.append(run)
    cpu_total = statistics.median(r.total_s for r in runs if r.device == "cpu")
    cpu_training = statistics.median(r.training_s for r in runs if r.device == "cpu")
    for device in devices:
        mine = [r for r in runs if r.device == device]
        total = statistics.median(r.total_s for r in mine)
        training = statistics.median(r.training_s for r in mine)
        grades = sorted({(r.score, r.accuracy) for r in mine})
        print(f"{device:4s} grades {grades}  sandbox {mine[0].sandbox}  whole command {total:.1f} s "
              f"({total / cpu_total:.2f}x cpu)  training {training:.1f} s "
              f"({training / cpu_training:.2f}x cpu)")
    if args.json_out:
        args.json_out.write_text(json.dumps([asdict(r) for r in runs], indent=1))


if __name__ == "__main__":
    main()
