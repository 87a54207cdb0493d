"""How long a sandboxed kernel takes to become ready: cold and forked from the kernel image, on the
machine as it is and at 4x oversubscription (four busy processes per core, started and stopped here).

Run by hand: `python benchmarks/kernel_start.py [--starts 20]`. Prints the median and the 99th
percentile of each series, and the ratio of each median to the idle cold start measured in the same
run (these machines are shared and noisy: compare ratios, not seconds). Cold and forked starts are
interleaved, so a drift in the machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from grader.kernel.session import KernelSession
from grader.sandbox.image import KernelImage
from grader.sandbox.jail import Sandbox
from grader.sandbox.limits import Limits
from load import MachineLoad  # the stress tests' load, so that both measure the same thing


def start_once(image: KernelImage | None) -> float:
    with Sandbox(Limits(), image=image) as sandbox:
        session = KernelSession(sandbox)
        start = time.perf_counter()
        session.start()
        seconds = time.perf_counter() - start
        session.stop()
    return seconds


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def series(starts: int, image: KernelImage) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"cold": [], "forked": []}
    for _ in range(starts):
        found["cold"].append(start_once(None))
        found["forked"].append(start_once(image))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20, help="starts of each kind, in each state (default 20)")
    args = parser.parse_args()
    image = KernelImage(("numpy", "matplotlib.pyplot")).start()
    start_once(image)  # the image's own start is not a kernel's
    results = {f"idle, {kind}": values for kind, values in series(args.starts, image).items()}
    with MachineLoad(per_core=4, batch=None):
        time.sleep(2)
        results.update({f"4x oversubscribed, {kind}": values for kind, values in series(args.starts, image).items()})
    image.close()
    base = statistics.median(results["idle, cold"])
    print(f"kernel start, {args.starts} of each ({sys.platform}, Python {sys.version.split()[0]})")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"  {name:28s} median {median:6.2f} s  p99 {percentile(values, 0.99):6.2f} s  "
              f"{median / base:5.2f}x idle cold  ({len(values)} ready)")


if __name__ == "__main__":
    main()
