"""A class's models on a GPU machine: the same N deep-mlp submissions graded with the machine's CPUs and
with its GPU, where each batch worker's long-lived trainer shares the device with the others.

Run on a machine with a CUDA device (the one script a lent GPU machine runs; it reaches no registry,
so bring the installed environment and the data): `GRADER_DATA=DIR python benchmarks/gpu_class.py
[--copies 50] [--jobs J]`. It prints both throughputs (models a minute), their ratio, and every
submission whose grade differs between the devices (there should be none). Without a CUDA device it
grades on the CPU only and says why the GPU figure is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def grade_class(folder: Path, out: Path, device: str, jobs: int, data_root: str) -> tuple[float, dict[str, float]]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader", "batch", str(folder), "--assignment", "deep-mlp", "--out", str(out),
                    "-j", str(jobs), "--device", device, "--data-root", data_root, "--course", str(REPO)],
                   check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    grades = {p.parent.name: json.loads(p.read_text())["score"] for p in sorted(out.glob("*/result.json"))}
    return seconds, grades


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 2)),
                        help="batch workers on each device (default: half the cores, at most 8)")
    parser.add_argument("--data-root", default=os.environ.get("GRADER_DATA", str(REPO.parent / "shared" / "data")))
    args = parser.parse_args()
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"{args.copies} deep-mlp submissions, grader batch -j {args.jobs}, {os.cpu_count()} cores"
          + (f", {torch.cuda.get_device_name(0)}" if "cuda" in devices else ""))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "class"
        folder.mkdir()
        for i in range(args.copies):
            (folder / f"student{i:02d}.ipynb").write_bytes((REPO / "solutions" / "deep_mlp.ipynb").read_bytes())
        results = {device: grade_class(folder, Path(tmp) / device, device, args.jobs, args.data_root)
                    for device in devices}
    for device, (seconds, grades) in results.items():
        rate = 60 * len(grades) / seconds
        print(f"{device:5s} {len(grades)} graded in {seconds:7.1f} s: {rate:6.1f} models a minute")
    if "cuda" not in results:
        print("no CUDA device here: the GPU figure is missing")
        return
    (cpu_s, cpu_grades), (gpu_s, gpu_grades) = results["cpu"], results["cuda"]
    print(f"GPU throughput / CPU throughput: {cpu_s / gpu_s:.2f}x")
    differ = {s: (cpu_grades.get(s), gpu_grades.get(s)) for s in cpu_grades.keys() | gpu_grades.keys()
              if cpu_grades.get(s) != gpu_grades.get(s)}
    print("same grade on both devices" if not differ else f"grades that differ (cpu, cuda): {differ}")


if __name__ == "__main__":
    main()
