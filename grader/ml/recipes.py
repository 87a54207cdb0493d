"""The recipes a model assignment's spec builds on: the data, the model, its training.

A spec creates one recipe and builds its checks from it:

    SETUP = ImageClassification(dataset="mnist", seed=93)
    Check("fully-connected", ..., SETUP.structure_check(fully_connected_only))
    def check_accuracy(ctx):
        run = SETUP.trained(ctx, student_budget(ctx, ...), rules=(...))
        if isinstance(run, Outcome):
            return run  # no model, a rule it breaks, a budget refused: the reason, as an outcome
        return accuracy_outcome(run, SETUP.data(ctx), ...)

Once per process a recipe loads its data (`resources`, cached by the
pipeline); once per submission it has the student's model built and described
in the child and rebuilt, inspected and described here (`describe`); once per
budget it trains the rebuild in the grader's trainer process (`train`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from grader.assignment import ResourceRequest
from grader.checks.models import unusable
from grader.child import protocol
from grader.context import CheckContext
from grader.data import load_california_housing, load_images
from grader.errors import StudentError
from grader.ml.analysis import Analysis
from grader.ml.baselines import Baselines, ForestSettings, regression_baselines
from grader.ml.budget import Budget, BudgetChoice
from grader.ml.description import ModelDescription, describe, not_a_module
from grader.ml.graph import graph_from
from grader.ml.metrics import mean_absolute_error, mean_squared_error
from grader.ml.task import FEATURE_STYLES, ModelTask, TaskData, image_task_data, tabular_task_data
from grader.ml.training import TrainingRun, TrainingSetup, not_trainable, train
from grader.scoring import Outcome

Rule = Callable[[ModelDescription], Outcome]


def inspect_model(answer: object, task: ModelTask, probes: dict[str, np.ndarray], *, seed: int) -> ModelDescription:
    """The child's description of the model, validated, rebuilt and run here: what the checks read."""
    from grader.ml.analysis import analyze
    from grader.ml.rebuild import RebuildError, rebuild

    if not isinstance(answer, dict):
        raise StudentError("the grader got a malformed description of the model", kind="broken")
    if answer.get("refused") or not answer.get("is_module"):
        return not_a_module(answer)
    graph = graph_from(answer)
    analysis = Analysis(forward_errors={})
    if not graph.unrebuildable:
        try:
            analysis = analyze(graph, rebuild(graph), task, probes, seed=seed)
        except RebuildError as exc:
            graph = replace(graph, unrebuildable=str(exc))
    return describe(graph, analysis, task=task.kind)


@dataclass(frozen=True)
class ModelRecipe:
    seed: int
    task: ModelTask

    def resources(self, request: ResourceRequest) -> object:
        raise NotImplementedError

    def data(self, ctx: CheckContext) -> TaskData:
        return ctx.resources

    def describe(self, ctx: CheckContext) -> ModelDescription:
        """The student's model, built once in the child, described and rebuilt here (once per submission)."""

        def run() -> ModelDescription:
            probes = self.data(ctx).probes(self.task.input_styles)
            request = protocol.Trace(factory=self.task.factory, args=list(self.task.factory_args),
                                     max_params=self.task.max_params, seed=ctx.seed, probes=probes)
            answer = ctx.run_child("model", "trace", request, what=self.task.factory)
            return inspect_model(answer, self.task, probes, seed=ctx.seed)

        return ctx.memo("describe-model", run)

    def train(self, ctx: CheckContext, budget: Budget) -> TrainingRun:
        """The rebuild trained with this budget in the grader's trainer (once per submission and budget)."""

        def run() -> TrainingRun:
            record = train(self.describe(ctx), self.task, self.data(ctx), budget, ctx.training_setup())
            ctx.timings["train_s"] = round(ctx.timings.get("train_s", 0.0) + record.wall_s, 3)
            return record

        return ctx.memo(f"train:{budget}", run)

    def structure_check(self, rule: Rule) -> Callable[[CheckContext], Outcome]:
        """A check applying `rule` to the model's description, after the guard every model check needs."""

        def check(ctx: CheckContext) -> Outcome:
            description = self.describe(ctx)
            return unusable(description, self.task.factory) or rule(description)

        return check

    def trained(self, ctx: CheckContext, choice: BudgetChoice, *, rules: Sequence[Rule] = ()) -> TrainingRun | Outcome:
        """The training run a score comes from, or the Outcome saying why there is none: no model, a rule
        it breaks (not trained), a budget refused, a model the grader cannot rebuild, or a forward
        pass that does something its layers do not (no accuracy credit)."""
        description = self.describe(ctx)
        problem = unusable(description, self.task.factory)
        if problem:
            return problem
        for rule in rules:
            verdict = rule(description)
            if verdict.fraction < 1:
                return Outcome.skipped(f"not trained: {verdict.message}")
        if choice.budget is None:
            return Outcome.failed(f"not trained: {choice.refused}; the grader never replaces a setting with one "
                                  "of its own")
        reason = not_trainable(description, self.task, choice.budget)
        if reason:
            # a forward pass that fails is the shape check's failure; training just does not apply
            verdict = Outcome.skipped if description.input_style is None else Outcome.failed
            return verdict(f"not trained: {reason}")
        if description.probe_mismatch:
            return Outcome.failed(f"no credit for this score: {description.probe_mismatch}. The grader trains and "
                                  "scores the layers your model is made of, so forward must compute nothing else")
        return self.train(ctx, choice.budget)


@dataclass(frozen=True)
class ImageClassification(ModelRecipe):
    """MNIST-like images, 10 classes (mlp-1500, deep-mlp, ...)."""

    dataset: str = "mnist"  # "mnist" | "fashion-mnist"
    task: ModelTask = ModelTask(kind="classification", n_outputs=10)

    def resources(self, request: ResourceRequest) -> TaskData:
        return image_task_data(load_images(self.dataset, request.data_root, cache=request.cache_dir), seed=self.seed)


@dataclass(frozen=True)
class RegressionResources:
    """What a regression check sees as ctx.resources."""

    data: TaskData
    baselines: Baselines


LOADERS = {"california-housing": load_california_housing}


@dataclass(frozen=True)
class TabularRegression(ModelRecipe):
    """Feature rows and one target, against the grader's own scikit-learn baselines (regression-vs-forest)."""

    task: ModelTask = ModelTask(kind="regression", n_outputs=1, factory="build_regressor",
                                input_styles=FEATURE_STYLES)
    dataset: str = "california-housing"
    forest: ForestSettings = field(default_factory=ForestSettings)

    def resources(self, request: ResourceRequest) -> RegressionResources:
        data = tabular_task_data(LOADERS[self.dataset](request.data_root), seed=self.seed)
        return RegressionResources(data=data, baselines=regression_baselines(data, cache_dir=request.cache_dir,
                                                                             forest=self.forest))

    def data(self, ctx: CheckContext) -> TaskData:
        return ctx.resources.data

    def baselines(self, ctx: CheckContext) -> Baselines:
        return ctx.resources.baselines


def comparison_table(run: TrainingRun, data: TaskData, baselines: Baselines, n_params: int,
                     *, model: str = "your network") -> dict:
    """details["table"]: the student's model and the baselines side by side on the test set."""
    n_train = len(data.train_y)
    rows = [[model, mean_squared_error(run.final_outputs, data.test_y),
             mean_absolute_error(run.final_outputs, data.test_y), f"{n_params:,}", n_params / n_train]]
    for baseline, unit in ((baselines.linear, "coefficients"), (baselines.forest, "tree nodes")):
        rows.append([baseline.title, mean_squared_error(baseline.predictions, data.test_y),
                     mean_absolute_error(baseline.predictions, data.test_y), f"{baseline.size:,} {unit}",
                     baseline.size / n_train])
    return {"title": f"Test set ({len(data.test_y):,} rows): your network and the grader's baselines",
            "columns": ["model", "test MSE", "test MAE", "parameters", f"per training sample ({n_train:,})"],
            "rows": rows}
