"""The grading service under load: many students uploading at once, against `grader batch -j 2`.

Run by hand: `python benchmarks/service_load.py [--uploads 200] [--clients 50] [--jobs 2]`.
Everything runs on loopback and stops by itself. The script starts `grader serve` (SQLite in a
temporary state directory, -j JOBS grading threads), puts CLIENTS students on its roster, and has
them upload UPLOADS gradient-descent notebooks (batch_throughput.py's mix: correct, a sign error,
untouched templates), CLIENTS at a time, each student with their own token. It measures:

- accept latency: from sending an upload to its 202 answer (p50, p99, max);
- grading throughput: uploads graded per minute, from the first accepted to the last graded;
- that every upload was accepted, graded once (its grading started once: `attempts` in the
  database) and is visible to its own student and to no other;

then grades the same notebooks with `grader batch -j JOBS` and prints both throughputs and their
ratio. The machines are shared and noisy: compare the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from batch_throughput import run_batch, submissions  # the scripts' shared class of notebooks
from test_service import Service  # the tests' way of starting and stopping `grader serve`


async def upload_all(service: Service, tokens: dict[str, str], notebooks: list[tuple[str, bytes]],
                     clients: int) -> tuple[list[float], dict[str, str]]:
    """Every notebook uploaded by its student, `clients` at once; (accept latencies, submission -> student)."""
    latencies: list[float] = []
    owner: dict[str, str] = {}
    gate = asyncio.Semaphore(clients)
    keys = list(tokens)

    async def one(index: int, name: str, content: bytes) -> None:
        student = keys[index % len(keys)]
        async with gate, httpx.AsyncClient(base_url=service.url, timeout=120,
                                           headers={"Authorization": f"Bearer {tokens[student]}"}) as client:
            started = time.perf_counter()
            answer = await client.post("api/submissions", files={"notebook": (name, content)},
                                       data={"assignment": "gradient-descent"})
            latencies.append(time.perf_counter() - started)
            assert answer.status_code == 202, answer.text
            owner[answer.json()["id"]] = student

    await asyncio.gather(*(one(i, name, content) for i, (name, content) in enumerate(notebooks)))
    return latencies, owner


def wait_until_graded(service: Service, expected: int, timeout_s: float) -> float:
    with service.client(service.staff_token) as staff:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = staff.get("api/submissions").json()
            if len(rows) == expected and all(r["status"] in ("graded", "failed") for r in rows):
                return time.perf_counter()
            time.sleep(0.5)
    raise SystemExit(f"not all {expected} uploads were graded within {timeout_s:.0f} s")


def checked(service: Service, tokens: dict[str, str], owner: dict[str, str]) -> None:
    """Each student sees exactly their own uploads, each graded, each started once."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from grader.service.db import Submission

    for student, token in tokens.items():
        with service.client(token) as client:
            seen = {r["id"]: r for r in client.get("api/submissions").json()}
        mine = {i for i, who in owner.items() if who == student}
        assert set(seen) == mine, f"{student} sees {len(seen)} submissions, uploaded {len(mine)}"
        assert all(r["status"] == "graded" for r in seen.values()), student
    engine = create_engine(service.database)
    with Session(engine) as session:
        attempts = [row.attempts for row in session.scalars(select(Submission))]
    engine.dispose()
    assert attempts == [1] * len(owner), f"grading starts per upload: {sorted(set(attempts))}"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()
    mix = list(submissions().values())
    notebooks = [(f"n{i:03d}.ipynb", nbformat.writes(mix[i % len(mix)]).encode()) for i in range(args.uploads)]
    root = Path(tempfile.mkdtemp(prefix="grader-load-"))
    try:
        service = Service(root / "state", "-j", str(args.jobs), "--per-minute", str(args.uploads))
        try:
            roster = "id,name\n" + "".join(f"s{i:02d},Student {i}\n" for i in range(args.clients))
            with service.client(service.staff_token) as staff:
                added = staff.post("api/staff/roster", files={"roster": ("roster.csv", roster.encode())}).json()
            tokens = {row["key"]: row["token"] for row in added["added"]}
            started = time.perf_counter()
            try:
                latencies, owner = asyncio.run(upload_all(service, tokens, notebooks, args.clients))
            except AssertionError:
                Path("/tmp/service-errors.log").write_text("".join(service.errors))
                raise
            accepted = time.perf_counter()
            finished = wait_until_graded(service, args.uploads, args.timeout)
            checked(service, tokens, owner)
        finally:
            service.stop()
        service_rate = args.uploads * 60 / (finished - started)

        class_dir = root / "class"
        class_dir.mkdir()
        for name, content in notebooks:
            (class_dir / name).write_bytes(content)
        batch_s = run_batch(class_dir, root / "batch-out", args.jobs)
        batch_rate = args.uploads * 60 / batch_s
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"{args.uploads} uploads from {args.clients} concurrent clients, -j {args.jobs}, "
          f"all accepted in {accepted - started:.1f} s, every one graded once and seen only by its student")
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    print(f"accept latency: p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {max(latencies) * 1000:.0f} ms "
          f"(mean {statistics.mean(latencies) * 1000:.0f} ms)")
    print(f"grading throughput: service {service_rate:.1f}/min ({finished - started:.0f} s), "
          f"grader batch -j {args.jobs} {batch_rate:.1f}/min ({batch_s:.0f} s): "
          f"service / batch = {service_rate / batch_rate:.2f}")


if __name__ == "__main__":
    main()
