"""The grader's own helper processes (the trainer, the saved-file reader): started outside the
student's kernel, watched by the CPU time they use, not the wall clock."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path
from typing import IO

from grader.sandbox.detect import launcher_command
from grader.sandbox.limits import MB, trainer_waiting


def start_trusted(argv: list[str], *, memory_mb: int | None, threads: int, device: str = "cpu",
                  stderr: IO[bytes] | int = subprocess.PIPE, waiting: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the grader's own code in a child process (the trainer): not sandboxed, since no student code
    runs there and it reads only validated data, but memory-limited where the device allows; it may
    wait on its standard input (finish_trusted gives it and waits; run_job gives a long-lived one a job
    at a time). `stderr`: a file for a long-lived one, whose messages would fill a pipe nobody reads;
    `waiting`: how its OpenMP threads wait (default: limits.trainer_waiting for the machine as it is now)."""
    rlimits = {"RLIMIT_CORE": 0}
    if memory_mb and device == "cpu":
        rlimits["RLIMIT_DATA"] = memory_mb * MB
    inherited = {name: value for name, value in os.environ.items() if name not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    waiting = waiting if waiting is not None else trainer_waiting(threads)
    env = {**inherited, **waiting, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONHASHSEED": "0"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # deterministic cuBLAS, for the same grade on every run
    return subprocess.Popen(launcher_command({"rlimits": rlimits}, argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=stderr, text=True, env=env, start_new_session=True)


class Stalled(Exception):
    """A trusted process was stopped by its runaway guard; the message says which guard."""


def finish_trusted(process: subprocess.Popen, *, stall_s: float, max_cpu_s: float | None = None,
                   stdin: str = "") -> subprocess.CompletedProcess:
    """Give a start_trusted process its input and wait for it, however long a busy machine makes that.

    The guard watches the process's CPU time, not the clock: it is killed (and Stalled raised) only
    when it used no CPU at all for `stall_s` seconds (hung: a machine that is merely busy still gives
    it some) or more than `max_cpu_s` seconds of CPU in all (a runaway)."""
    text: str | None = stdin
    last_cpu, last_progress = -1.0, time.monotonic()
    while True:
        try:
            stdout, stderr = process.communicate(text, timeout=TRUSTED_POLL_S)
            return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            text = None  # given once; communicate keeps what it has read so far
        cpu, now = cpu_seconds(process.pid), time.monotonic()
        if cpu > last_cpu:
            last_cpu, last_progress = cpu, now
        why = (f"it used no CPU for {stall_s:.0f} s" if now - last_progress > stall_s
               else f"it used more than {max_cpu_s:.0f} s of CPU time" if max_cpu_s and cpu > max_cpu_s else "")
        if why:
            process.kill()
            process.communicate()
            raise Stalled(why)


def run_job(process: subprocess.Popen, line: str, *, done: str, stall_s: float,
            max_cpu_s: float | None = None) -> bool:
    """Give a long-lived start_trusted process one job (`line` on its standard input) and wait until it
    writes the line `done` (other lines it writes are passed over), with finish_trusted's guards counted
    from this job's start. False when the process ended instead (its exit status and messages say why)."""
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(line)
        process.stdin.flush()
    except (BrokenPipeError, ValueError):  # it died before this job
        process.wait()
        return False
    started = last_cpu = cpu_seconds(process.pid)
    last_progress = time.monotonic()
    output, unfinished = process.stdout.fileno(), b""  # read raw: a buffered reader would hide lines from select
    while True:
        ready, _, _ = select.select([output], [], [], TRUSTED_POLL_S)
        if ready:
            chunk = os.read(output, 65536)
            if not chunk:  # its end of the pipe closed: it died mid-job
                process.wait()
                return False
            *lines, unfinished = (unfinished + chunk).split(b"\n")
            if done.encode() in lines:
                return True
            continue
        cpu, now = cpu_seconds(process.pid), time.monotonic()
        if cpu > last_cpu:
            last_cpu, last_progress = cpu, now
        why = (f"it used no CPU for {stall_s:.0f} s" if now - last_progress > stall_s
               else f"it used more than {max_cpu_s:.0f} s of CPU time" if max_cpu_s and cpu - started > max_cpu_s
               else "")
        if why:
            process.kill()
            process.wait()
            raise Stalled(why)


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system, all threads) a process has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


TRUSTED_POLL_S = 1.0
