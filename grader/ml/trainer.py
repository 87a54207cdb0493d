"""The grader's training run, in a process that never ran student code.

    python -m grader.ml.trainer JOB
    python -m grader.ml.trainer --wait-for-job     (then one JOB a line on standard input; after each,
                                                    JOB_DONE on standard output; an empty line or the
                                                    end of the input ends it)

JOB is a directory the grader wrote (grader/ml/training.py): job.json with the
model's description in the child's format, the budget, the seed, the device,
the input style, where the scores are in the output and the loss; the
parameter values as state-<i>.npy; the paths of the data arrays (no test
labels among them). The model is rebuilt from standard torch, trained with
exactly that budget, and its raw outputs on the test inputs go back, before
training and after each epoch, with the history (and, when the task has extra
inputs, its outputs on them after training): JOB/out/ in the exchange format
(value.json and .npy files), which the grader reads as untrusted data all the
same and checks against the budget it set.

A job whose job.json says "kind": "analyze" asks instead what the grader
learns from running the rebuild on its probe inputs (grader/ml/analysis.py):
the graph, the probe inputs and the student's own outputs on them as .npy
files; the answer is the analysis, or why the model cannot be rebuilt. The
grader itself then never imports torch for a model.

A trainer that waits for jobs trains many models in turn and keeps the task's
data between them (on the GPU, as device tensors). Each job sets its own seeds,
threads and, on a GPU, a share of the device's memory (the submission's memory
limit), so a job trains as it would in a new process and no model can take
the memory the trainers beside it on the same device need.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOG_EPSILON = 1e-12
DEVICE_DATA_BYTES = 2 << 30  # each data array larger than this stays in host memory, copied a batch at a time
WAIT_FOR_JOB = "--wait-for-job"  # the job directory comes on standard input (a trainer started early)
JOB_DONE = "grader-trainer: job done"  # what a waiting trainer writes when a job's answer is in its out/
MB = 1 << 20


class TaskArrays:
    """The data arrays of the jobs a trainer trains, loaded once: a batch's jobs share one task's data.
    Only the latest job's arrays are kept (a new task's replace them)."""

    def __init__(self) -> None:
        self._kept: dict[tuple, object] = {}

    def get(self, path: str, make):
        """`make(array)` of the .npy at `path`, made once while its file is unchanged."""
        stat = Path(path).stat()
        key = (path, stat.st_size, stat.st_mtime_ns, make)
        if key not in self._kept:
            self._kept[key] = make(np.load(path, allow_pickle=False))
        return self._kept[key]

    def keep_only(self, paths: set[str]) -> None:
        self._kept = {key: value for key, value in self._kept.items() if key[0] in paths}


def _loss(kind: str, scores, targets):
    import torch.nn.functional as F

    if kind == "regression-mse":
        return F.mse_loss(scores.reshape(-1), targets)
    if kind == "regression-mae":
        return F.l1_loss(scores.reshape(-1), targets)
    if kind == "binary-probability":
        # the model's own sigmoid: binary cross-entropy on its output, kept away from log(0)
        return F.binary_cross_entropy(scores.reshape(-1).clamp(LOG_EPSILON, 1 - LOG_EPSILON), targets)
    if kind == "binary-logit":
        return F.binary_cross_entropy_with_logits(scores.reshape(-1), targets)
    if kind == "probabilities":
        # NLL on log-probabilities: cross-entropy on probabilities would apply softmax twice
        return F.nll_loss(scores.clamp_min(LOG_EPSILON).log(), targets)
    if kind == "log-probabilities":
        return F.nll_loss(scores, targets)
    return F.cross_entropy(scores, targets)


def _optimizer(name: str, parameters, lr: float):
    import torch

    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9)
    if name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")


def _scores(output, index):
    return output if index is None else output[index]


def _correct(kind: str, scores, targets):
    """How many training examples the scores get right (classification and binary tasks), as a
    tensor on the scores' device: read together with the loss, one wait for the GPU per step."""
    if kind.startswith("binary"):
        predicted = scores.detach().reshape(-1) > (0.5 if kind == "binary-probability" else 0.0)
        return (predicted == (targets > 0.5)).sum()
    return (scores.detach().argmax(dim=1) == targets).sum()


def _step_values(kind: str, loss, scores, targets) -> tuple[float, int]:
    """The step's loss and correct count, copied from the device at once."""
    if kind.startswith("regression"):
        return loss.item(), 0
    import torch

    loss_value, correct = torch.stack([loss.detach().float(), _correct(kind, scores, targets).float()]).tolist()
    return loss_value, int(correct)


def _on_device(tensor, device: str):
    """The whole dataset on the GPU when it fits comfortably: a batch then costs an index, not a
    copy from host memory (exactly the same values either way)."""
    if device == "cpu" or tensor.numel() * tensor.element_size() > DEVICE_DATA_BYTES:
        return tensor
    return tensor.to(device)


@dataclass(frozen=True)
class _Inputs:
    """An input array as the model is fed it, on the device where it fits (with its path, a TaskArrays key)."""

    style: str
    device: str

    def __call__(self, array: np.ndarray):
        from grader.ml.analysis import shaped

        return _on_device(shaped(array, self.style), self.device)


@dataclass(frozen=True)
class _Labels:
    """Labels as the loss takes them: float for regression and binary tasks, else class indices."""

    dtype: str  # "float" | "long"
    device: str

    def __call__(self, array: np.ndarray):
        import torch

        labels = torch.from_numpy(array)
        return _on_device(labels.float() if self.dtype == "float" else labels.long(), self.device)


def _share_device(device: str, memory_mb: int | None) -> None:
    """This job may hold at most the submission's memory limit of the GPU's memory: trainers beside it
    on the same device keep theirs (a model past it fails with an out-of-memory error, its own)."""
    import torch

    if not memory_mb or not device.startswith("cuda"):
        return
    index = torch.device(device).index or 0
    total = torch.cuda.get_device_properties(index).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, memory_mb * MB / total), index)


def _outputs(model, x, job, device, batch_size=1000) -> np.ndarray:
    import torch

    n_outputs = job["n_outputs"]
    model.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            # a copy: a model that changes its input in place must not change the kept test inputs
            scores = _scores(model(x[start:start + batch_size].to(device, copy=True)), job["tuple_index"])
            chunks.append(scores.reshape(-1, n_outputs).float().cpu().numpy())
    model.train()
    return np.concatenate(chunks) if chunks else np.zeros((0, n_outputs), dtype=np.float32)


def _model_graph(job_dir: Path, job: dict):
    """The job's model: its description, with the parameter values from their files."""
    from grader.ml.graph import graph_from

    state = {name: np.load(job_dir / file, allow_pickle=False) for name, file in job["state_files"].items()}
    return graph_from({**job["model"], "state": state})


def train(job_dir: Path, arrays: TaskArrays | None = None) -> dict:
    import torch

    from grader.ml.rebuild import rebuild

    started, cpu_started = time.monotonic(), time.process_time()
    job = json.loads((job_dir / "job.json").read_text())
    arrays = arrays or TaskArrays()
    torch.set_num_threads(max(1, int(job["threads"])))
    graph = _model_graph(job_dir, job)
    seed, device, budget = job["seed"], job["device"], job["budget"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device != "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        _share_device(device, job.get("memory_mb"))
    model = rebuild(graph).to(device)
    style, index, kind = job["input_style"], job["tuple_index"], job["loss_kind"]
    labels = "float" if kind.startswith(("regression", "binary")) else "long"
    paths = job["data"]
    arrays.keep_only(set(paths.values()))
    train_x = arrays.get(paths["train_x"], _Inputs(style, device))
    train_y = arrays.get(paths["train_y"], _Labels(labels, device))
    test_x = arrays.get(paths["test_x"], _Inputs(style, device))
    extra_x = arrays.get(paths["extra_x"], _Inputs(style, "cpu")) if "extra_x" in paths else None
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = _optimizer(budget["optimizer"], trainable, budget["lr"]) if trainable else None
    generator = torch.Generator().manual_seed(seed)
    history: dict[str, list[float]] = {"train_loss": [], "train_accuracy": []}
    test_outputs = [_outputs(model, test_x, job, device)]
    stopped, runaway, steps = None, None, 0
    model.train()
    for _epoch in range(budget["epochs"]):
        order = torch.randperm(len(train_x), generator=generator).to(train_x.device)
        loss_sum, correct, seen = 0.0, 0, 0
        for start in range(0, len(order), budget["batch_size"]):
            batch = order[start:start + budget["batch_size"]]
            xb, yb = train_x[batch].to(device), train_y[batch].to(device)
            scores = _scores(model(xb), index)
            loss = _loss(kind, scores, yb)
            loss_value, batch_correct = _step_values(kind, loss, scores, yb)
            if not math.isfinite(loss_value):
                stopped = f"the loss became {loss_value} at step {steps + 1}: training diverged"
                break
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            steps += 1
            loss_sum += loss_value * len(batch)
            seen += len(batch)
            correct += batch_correct
            # The runaway guard counts this process's CPU time, which a busy machine does not inflate
            # (waiting for a core costs none): it stops a model far costlier than the budget implies.
            if time.process_time() - cpu_started > job["max_cpu_seconds"]:
                runaway = (f"training used more than {job['max_cpu_seconds']:.0f} s of CPU time, the grader's "
                           f"safety limit, after {steps} steps")
                break
        if runaway:
            break
        if seen:
            history["train_loss"].append(loss_sum / seen)
            history["train_accuracy"].append(math.nan if kind.startswith("regression") else correct / seen)
            test_outputs.append(_outputs(model, test_x, job, device))
        if stopped:
            break
    answer = {"epochs_run": len(history["train_loss"]), "steps": steps, "history": history,
              "test_outputs": test_outputs, "stopped_early": stopped, "device": device, "runaway": runaway}
    if extra_x is not None:
        answer["extra_outputs"] = _outputs(model, extra_x, job, device)
    return {**answer, "wall_s": time.monotonic() - started, "cpu_s": time.process_time() - cpu_started}


def analysis_job(job_dir: Path) -> dict:
    """An analysis job: whether the grader can rebuild the model, and what its rebuild does on the grader's
    probe inputs (grader/ml/analysis.py), compared with what the student's own forward pass gave."""
    import torch

    from grader.ml.analysis import analysis_to_answer, analyze_rebuild
    from grader.ml.graph import ProbeAnswer
    from grader.ml.task import ModelTask

    job = json.loads((job_dir / "job.json").read_text())
    torch.set_num_threads(max(1, int(job["threads"])))
    inputs = {style: np.load(job_dir / file, allow_pickle=False) for style, file in job["inputs"].items()}
    answers = {style: ProbeAnswer(outputs=tuple(None if f is None else np.load(job_dir / f, allow_pickle=False)
                                                for f in entry["files"]),
                                  is_tuple=entry["is_tuple"], error=entry["error"])
               for style, entry in job["answers"].items()}
    graph = dataclasses.replace(_model_graph(job_dir, job), probes=answers)
    task = ModelTask(kind=job["task"]["kind"], n_outputs=job["task"]["n_outputs"],
                     input_styles=tuple(job["task"]["input_styles"]))
    unrebuildable, analysis = analyze_rebuild(graph, task, inputs, seed=job["seed"])
    if unrebuildable:
        return {"unrebuildable": unrebuildable}
    return {"analysis": analysis_to_answer(analysis)}


def run(job_dir: Path, arrays: TaskArrays | None = None) -> None:
    """Run one job (training, or an analysis) and write its answer (or the error that stopped it) into
    JOB/out/."""
    from grader.child import wire

    out_dir = job_dir / "out"
    out_dir.mkdir(exist_ok=True)
    try:
        if json.loads((job_dir / "job.json").read_text()).get("kind") == "analyze":
            answer = {"ok": analysis_job(job_dir)}
        else:
            answer = {"ok": train(job_dir, arrays)}
    except Exception as exc:  # reported to the grader as data
        answer = {"error": {"type": type(exc).__name__, "message": str(exc)[:1000]}}
    finally:
        _release_device_memory()
    wire.dump(answer, str(out_dir))


def _release_device_memory() -> None:
    """What a job left in torch's GPU cache goes back to the device, for the trainers beside this one."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def main(argv: list[str]) -> int:
    if argv[1:] == [WAIT_FOR_JOB]:
        # started before the job exists: pay the imports while the grader still runs the notebook.
        # What torch imports lazily the first time an optimizer is made (torch._dynamo) or determinism is
        # asked for (torch._inductor.config): 1.6 s here and 5 s on a GPU machine, once inside every
        # training run's time otherwise.
        import torch._dynamo
        import torch._inductor.config  # noqa: F401

        import grader.ml.analysis
        import grader.ml.graph
        import grader.ml.rebuild  # noqa: F401

        arrays = TaskArrays()
        while True:
            line = sys.stdin.readline().strip()
            if not line:
                return 0  # no more jobs (or not needed after all)
            run(Path(line), arrays)
            print(JOB_DONE, flush=True)
    run(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
