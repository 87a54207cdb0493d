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

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from grader.checks.context import CheckContext
from grader.checks.models import unusable
from grader.child import protocol
from grader.errors import StudentError
from grader.locations import ResourceRequest
from grader.ml.analysis import Analysis
from grader.ml.baselines import Baselines, ForestSettings, regression_baselines
from grader.ml.budget import Budget, BudgetChoice
from grader.ml.datasets import load_california_housing, load_images
from grader.ml.description import ModelDescription, describe, not_a_module
from grader.ml.graph import graph_from
from grader.ml.metrics import accuracy, mean_absolute_error, mean_squared_error, two_class_scores
from grader.ml.task import FEATURE_STYLES, ModelTask, TaskData, image_task_data, model_inputs, tabular_task_data
from grader.ml.toy import TOY_TASKS, toy_field, toy_task_data
from grader.ml.training import TrainingRun, not_trainable, train
from grader.scoring import Outcome
from grader.states import StudentErrorKind

Rule = Callable[[ModelDescription], Outcome]


def inspect_model(answer: object, task: ModelTask, probes: dict[str, np.ndarray],
                  ctx: CheckContext) -> ModelDescription:
    """The child's description of the model, validated, and what its rebuild does (ctx.analyze_model): what
    the checks read."""
    if not isinstance(answer, dict):
        raise StudentError("the grader got a malformed description of the model", kind=StudentErrorKind.BROKEN)
    if answer.get("refused") or not answer.get("is_module"):
        return not_a_module(answer)
    graph = graph_from(answer)
    analysis = Analysis(forward_errors={})
    if not graph.unrebuildable:
        unrebuildable, analysis = ctx.analyze_model(graph, task, probes)
        if unrebuildable:
            graph = replace(graph, unrebuildable=unrebuildable)
    return describe(graph, analysis, task=task.kind)


PROBE_ROWS = 16


class MissingData:
    """What ctx.resources holds when `grader check` finds no dataset on the student's machine."""

    def __init__(self, reason: str):
        self.missing = reason


@dataclass(frozen=True)
class ModelRecipe:
    seed: int
    task: ModelTask
    # the rows the model's own forward pass and its rebuild are compared on; from the data, or (in a
    # student bundle) stored with the recipe, so structure checks need no dataset
    probe_rows: Any = field(default=None, compare=False, repr=False)

    def resources(self, request: ResourceRequest) -> object:
        raise NotImplementedError

    def data(self, ctx: CheckContext) -> TaskData:
        return ctx.resources

    def probes(self, ctx: CheckContext) -> dict[str, np.ndarray]:
        rows = self.probe_rows if self.probe_rows is not None else self.data(ctx).train_x[:PROBE_ROWS]
        return {style: model_inputs(np.asarray(rows), style) for style in self.task.input_styles}

    def describe(self, ctx: CheckContext) -> ModelDescription:
        """The student's model, built once in the child, described and rebuilt here (once per submission)."""

        def run() -> ModelDescription:
            probes = self.probes(ctx)
            request = protocol.Trace(factory=self.task.factory, args=list(self.task.factory_args),
                                     max_params=self.task.max_params, seed=ctx.seed, probes=probes)
            answer = ctx.run_child("model", "trace", request, what=self.task.factory)
            return inspect_model(answer, self.task, probes, ctx)

        return ctx.memo(f"describe-model:{self.task.factory}{self.task.factory_args}", run)

    def train(self, ctx: CheckContext, budget: Budget, *, train_rows: int | None = None) -> TrainingRun:
        """The rebuild trained with this budget in the grader's trainer (once per submission and budget);
        on the first `train_rows` training rows only for a preview."""

        def run() -> TrainingRun:
            data = self.data(ctx)
            if train_rows is not None:
                data = data.head(train_rows)
            record = train(self.describe(ctx), self.task, data, budget, ctx.training_setup(), ctx.trainers)
            ctx.timings["train_s"] = round(ctx.timings.get("train_s", 0.0) + record.wall_s, 3)
            return record

        # one memo per model and data too: a spec with several recipes (toy-2d) trains several models
        return ctx.memo(f"train:{self.task.call}:{self.data(ctx).version}:{budget}:{train_rows}", run)

    def structure_check(self, rule: Rule) -> Callable[[CheckContext], Outcome]:
        """A check applying `rule` to the model's description, after the guard every model check needs."""

        def check(ctx: CheckContext) -> Outcome:
            description = self.describe(ctx)
            return unusable(description, self.task.factory) or rule(description)

        return check

    def trained(self, ctx: CheckContext, choice: BudgetChoice, *, rules: Sequence[Rule] = (),
                train_rows: int | None = None) -> TrainingRun | Outcome:
        """The training run a score comes from, or the Outcome saying why there is none: no model, a rule
        it breaks (not trained), a budget refused, a model the grader cannot rebuild, or a forward
        pass that does something its layers do not (no accuracy credit)."""
        missing = getattr(ctx.resources, "missing", None)
        if missing:
            return Outcome.skipped(f"not checked on this machine: {missing}")
        description = self.describe(ctx)
        problem = unusable(description, self.task.call)
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
            refusal = Outcome.skipped if description.input_style is None else Outcome.failed
            return refusal(f"not trained: {reason}")
        if description.probe_mismatch:
            return Outcome.failed(f"no credit for this score: {description.probe_mismatch}. The grader trains and "
                                  "scores the layers your model is made of, so forward must compute nothing else")
        return self.train(ctx, choice.budget, train_rows=train_rows)

    def preview_outcome(self, run: TrainingRun, ctx: CheckContext, *, rows: int) -> Outcome:
        """A short training's verdict: whether the model learns at all. A preview, never a grade."""
        raise NotImplementedError

    def preview_budget(self, budget: Budget, preview: Any) -> Budget:
        """The budget of a preview (grader.checks.catalog.Preview): the graded one, cut to the preview's epochs."""
        return replace(budget, epochs=min(budget.epochs, preview.epochs))

    def feedback(self, run: TrainingRun, ctx: CheckContext) -> dict:
        """Details the recipe adds to every score of a training run (e.g. a picture of the model's estimate)."""
        return {}

    # -- the student bundle ------------------------------------------------------------

    def to_bundle(self, resources: Any) -> dict:
        rows = self.probe_rows if self.probe_rows is not None else _task_data(resources).train_x[:PROBE_ROWS]
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "probe_rows"}
        return {"recipe": RECIPE_NAMES[type(self)], **_plain(fields), "probe_rows": np.asarray(rows)}


def _task_data(resources: Any) -> TaskData:
    return resources if isinstance(resources, TaskData) else resources.data


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class ImageClassification(ModelRecipe):
    """MNIST-like images, 10 classes (mlp-1500, deep-mlp, ...)."""

    dataset: str = "mnist"  # "mnist" | "fashion-mnist"
    task: ModelTask = ModelTask(kind="classification", n_outputs=10)

    def resources(self, request: ResourceRequest) -> TaskData:
        return image_task_data(load_images(self.dataset, request.data_root, cache=request.cache_dir), seed=self.seed)

    def preview_outcome(self, run: TrainingRun, ctx: CheckContext, *, rows: int) -> Outcome:
        test_y = self.data(ctx).test_y
        before, after = accuracy(run.test_outputs[0], test_y), accuracy(run.final_outputs, test_y)
        chance = 1 / run.final_outputs.shape[1]
        trained = f"{run.budget.text()} on the first {rows:,} training images"
        if after > max(before, chance) + 0.1:
            return Outcome.skipped(f"preview, not a grade: test accuracy {after:.1%} after {trained} ({before:.1%} "
                                   "before); the model learns. `grader check --train` runs the graded training")
        return Outcome.failed(f"preview: the model does not seem to learn: test accuracy {after:.1%} after {trained} "
                              f"({before:.1%} before, chance {chance:.0%})")


class RegressionResources:
    """What a regression check sees as ctx.resources: the data, and the baselines fitted on first use
    (a preview of a student's model needs none)."""

    def __init__(self, data: TaskData, fit: Callable[[], Baselines]):
        self.data = data
        self._fit = fit

    @functools.cached_property
    def baselines(self) -> Baselines:
        return self._fit()


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
        return RegressionResources(data, lambda: regression_baselines(data, cache_dir=request.cache_dir,
                                                                      forest=self.forest))

    def data(self, ctx: CheckContext) -> TaskData:
        return ctx.resources.data

    def baselines(self, ctx: CheckContext) -> Baselines:
        return ctx.resources.baselines

    def preview_outcome(self, run: TrainingRun, ctx: CheckContext, *, rows: int) -> Outcome:
        test_y = self.data(ctx).test_y
        before, after = mean_squared_error(run.test_outputs[0], test_y), mean_squared_error(run.final_outputs, test_y)
        trained = f"{run.budget.text()} on the first {rows:,} training rows"
        if after < 0.8 * before:
            return Outcome.skipped(f"preview, not a grade: test MSE {after:.3f} after {trained} ({before:.3f} before); "
                                   "the model learns. `grader check --train` runs the graded training")
        return Outcome.failed(f"preview: the model does not seem to learn: test MSE {after:.3f} after {trained} "
                              f"({before:.3f} before)")


@dataclass(frozen=True)
class Toy2D(ModelRecipe):
    """One toy task on points of the plane that the grader draws itself (toy-2d: prod, xor, quadrants; see
    grader/ml/toy.py). `Toy2D.for_task(name, seed=...)` makes the recipe of one task, built by
    build_model(name); its resources are the data of every toy task, so that any one recipe loads them all."""

    toy: str = "xor"
    n_train: int = 1000
    n_test: int = 2000
    grid_side: int = 41
    datasets: ClassVar[tuple[str, ...]] = ()  # what an LMS bundle ships (grader/lms/bundle.py): no files at all

    @classmethod
    def for_task(cls, name: str, *, seed: int, factory: str = "build_model", max_params: int = 100_000,
                 max_train_seconds: float = 120.0, **sizes: int) -> Toy2D:
        toy = TOY_TASKS[name]
        task = ModelTask(kind=toy.kind, n_outputs=toy.n_outputs, factory=factory, factory_args=(name,),
                         max_params=max_params, max_train_seconds=max_train_seconds, input_styles=FEATURE_STYLES)
        return cls(seed=seed, task=task, toy=name, **sizes)

    def resources(self, request: ResourceRequest) -> dict[str, TaskData]:
        return {name: toy_task_data(name, seed=self.seed, n_train=self.n_train, n_test=self.n_test,
                                    grid_side=self.grid_side) for name in TOY_TASKS}

    def data(self, ctx: CheckContext) -> TaskData:
        return ctx.resources[self.toy]

    def to_bundle(self, resources: Any) -> dict:
        rows = self.probe_rows if self.probe_rows is not None else resources[self.toy].train_x[:PROBE_ROWS]
        return super(Toy2D, replace(self, probe_rows=rows)).to_bundle(resources)

    def preview_budget(self, budget: Budget, preview: Any) -> Budget:
        return budget  # the graded training takes a second or two: the preview is the real run

    def feedback(self, run: TrainingRun, ctx: CheckContext) -> dict:
        if run.extra_outputs is None:
            return {}
        return {"field": toy_field(self.toy, self.data(ctx), run.extra_outputs,
                                   output_kind=self.describe(ctx).output_kind)}

    def preview_outcome(self, run: TrainingRun, ctx: CheckContext, *, rows: int) -> Outcome:
        data, kind = self.data(ctx), self.task.kind
        if kind == "regression":
            before, after = (mean_squared_error(o, data.test_y) for o in (run.test_outputs[0], run.final_outputs))
            found, learns = f"test MSE {after:.4f} ({before:.4f} before)", after < 0.8 * before
        else:
            outputs = [two_class_scores(o, self.describe(ctx).output_kind) if kind == "binary" else o
                       for o in (run.test_outputs[0], run.final_outputs)]
            before, after = (accuracy(o, data.test_y) for o in outputs)
            found, learns = f"test accuracy {after:.1%} ({before:.1%} before)", after > before + 0.05
        trained = f"after {run.budget.text()} on the grader's {len(data.train_y):,} points"
        if learns:
            return Outcome.skipped(f"preview, not a grade: {found} {trained}; the model learns. "
                                   "`grader check --train` runs the graded training and scores it")
        return Outcome.failed(f"preview: the model does not seem to learn: {found} {trained}")


RECIPE_NAMES = {ImageClassification: "image-classification", TabularRegression: "tabular-regression",
                Toy2D: "toy-2d"}


def recipe_from_bundle(data: dict) -> ModelRecipe:
    """A recipe from the student bundle: its settings, and the probe rows it stores."""
    cls = next(c for c, name in RECIPE_NAMES.items() if name == data["recipe"])
    task = dict(data["task"])
    task.update(factory_args=tuple(task["factory_args"]), input_styles=tuple(task["input_styles"]))
    fields = {"seed": data["seed"], "task": ModelTask(**task), "probe_rows": np.asarray(data["probe_rows"])}
    if cls is ImageClassification:
        fields["dataset"] = data["dataset"]
    elif cls is Toy2D:
        fields.update({key: data[key] for key in ("toy", "n_train", "n_test", "grid_side")})
    else:
        fields.update(dataset=data["dataset"], forest=ForestSettings(**data["forest"]))
    return cls(**fields)


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
