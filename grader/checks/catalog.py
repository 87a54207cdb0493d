"""Checks written as data: what the grader runs when grading and a student runs before submitting.

A spec may write a check as a plain function of a CheckContext; it is then
graded after submission only. Written as one of the kinds below, the same
check can also be saved in the student bundle (grader/course/bundle.py) and run on a
student's machine by `grader check`, with the same verdict and message:

- `Probed`: calls the student's functions with inputs the spec computes (with
  the grader's seed) and hands the answers to a named judge
  (grader/checks/judges.py) with the expected values;
- `ModelRule`: a named rule on the model's description (grader/checks/models.py),
  with declared values the notebook sets (N_PARAMS, ...) where it needs them;
- `ValueRule`: a named rule on declared values alone (LEARNING_RATE);
- `ModelScore`: the grader's training of the model under a budget the student
  chooses within the spec's rules, scored by a named judge.

Everything a kind holds is data (numbers, strings, arrays, names of rules and
judges), so `to_bundle` and `from_bundle` can move it to a student's machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeGuard

import numpy as np

from grader.checks import models as rules
from grader.checks.budget import student_budget
from grader.checks.context import CallSpec
from grader.checks.judges import JUDGES, CallFailed
from grader.errors import StudentError
from grader.ml.budget import Budget, BudgetCaps, BudgetChoice, learning_rate_problem
from grader.scoring import Outcome

# --------------------------------------------------------------------------
# Probed: calls and a judge


@dataclass(frozen=True)
class Plan:
    """The calls a check makes, what the grader expects, and the judge that compares them."""

    calls: tuple[CallSpec, ...]
    judge: str
    expected: Any = None
    params: dict = field(default_factory=dict)
    tolerate_errors: bool = False  # failed calls reach the judge as CallFailed instead of failing the check


class PlanInputs:
    """What a plan may draw on: generators seeded by the assignment's seed and a key (as CheckContext.rng)."""

    def __init__(self, seed: int):
        self.seed = seed

    def rng(self, key: str) -> np.random.Generator:
        import zlib

        return np.random.default_rng([self.seed, zlib.crc32(key.encode())])


def run_plan(ctx: Any, plan: Plan) -> Outcome:
    answers = []
    for answer in ctx.call_many(plan.calls, keep_going=plan.tolerate_errors):
        if isinstance(answer, StudentError):
            if not plan.tolerate_errors:
                raise answer
            answer = CallFailed(answer.message)
        answers.append(answer)
    return JUDGES[plan.judge](answers, plan.expected, **plan.params)


@dataclass(frozen=True)
class Probed:
    """A check made by `plan`, a function of PlanInputs (or of the context itself, which has rng too)."""

    plan: Callable[[Any], Plan]
    needs: tuple[str, ...] = ()  # e.g. "blocked-modules": the calls must run where the spec's blocked modules are

    def __call__(self, ctx: Any) -> Outcome:
        return run_plan(ctx, self.plan(ctx))

    def to_bundle(self, seed: int, resources: Any) -> dict:
        return {"kind": "probed", "plan": dataclasses.asdict(self.plan(PlanInputs(seed))), "needs": list(self.needs)}

    @classmethod
    def from_bundle(cls, data: dict, **_: Any) -> Probed:
        plan = data["plan"]
        fixed = Plan(calls=tuple(CallSpec(c["function"], tuple(c["args"]), dict(c["kwargs"])) for c in plan["calls"]),
                     judge=plan["judge"], expected=plan["expected"], params=dict(plan["params"]),
                     tolerate_errors=bool(plan["tolerate_errors"]))
        return cls(plan=lambda ctx: fixed, needs=tuple(data.get("needs", ())))


# --------------------------------------------------------------------------
# Rules on the model's description and on declared values


def _declared_count(description, values, *, name: str, factory: str) -> Outcome:
    value = values[name]
    return rules.not_a_number(name, value, f"the number of parameters of {factory}") or \
        rules.declared_parameter_count(value, description, name=name, factory=factory)


def _declared_ratio(description, values, *, name: str, count_name: str, n_train: int, n_test: int,
                    rtol: float) -> Outcome:
    value = values[name]
    problem = rules.not_a_number(name, value, f"{count_name} divided by the number of training samples")
    return problem or rules.declared_ratio(value, values.get(count_name), description, n_train=n_train,
                                           n_test=n_test, name=name, rtol=rtol)


MODEL_RULES: dict[str, Callable[..., Outcome]] = {
    "returns-module": lambda d, v, factory="build_model": rules.returns_module(d, factory),
    "exact-linear-stack": lambda d, v, dims: rules.exact_linear_stack(d, dims),
    "parameter-count": lambda d, v, dims: rules.parameter_count(d, dims),
    "output-shape": lambda d, v, n_outputs, factory="build_model": rules.output_shape(d, n_outputs, factory),
    "activation-between": lambda d, v, activation="relu": rules.activation_between(d, activation),
    "min-linear-layers": lambda d, v, minimum: rules.min_linear_layers(d, minimum),
    "fully-connected-only": lambda d, v: rules.fully_connected_only(d),
    "regression-output-shape": lambda d, v, factory: rules.regression_output_shape(d, factory),
    "no-output-activation": lambda d, v, factory, **targets: rules.no_output_activation(d, factory, **targets),
    "binary-output": lambda d, v, factory="build_model": rules.binary_output(d, factory),
    "uses-convolution": lambda d, v, factory="build_model": rules.uses_convolution(d, factory),
    "max-parameters": lambda d, v, maximum, factory="build_model": rules.max_parameters(d, maximum, factory),
    "declared-parameter-count": _declared_count,
    "declared-ratio": _declared_ratio,
}


# what a rule can tell from the declared values alone, before the model is built (a stub notebook's
# N_PARAMS = None is named as such, not hidden behind "build_regressor is not implemented")
VALUE_PROBLEMS: dict[str, Callable[..., Outcome | None]] = {
    "declared-parameter-count": lambda values, *, name, factory: rules.not_a_number(
        name, values[name], f"the number of parameters of {factory}"),
    "declared-ratio": lambda values, *, name, count_name, **_: rules.not_a_number(
        name, values[name], f"{count_name} divided by the number of training samples"),
}


def _declared(ctx: Any, names: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
    values = {name: ctx.get(name) for name in names}
    for name in optional:
        try:
            values[name] = ctx.get(name)
        except StudentError:
            values[name] = None
    return values


@dataclass(frozen=True)
class ModelRule:
    recipe: Any  # a grader.checks.recipes.ModelRecipe
    rule: str
    params: dict = field(default_factory=dict)
    declared: tuple[str, ...] = ()  # names the notebook must define (their values reach the rule)
    optional: tuple[str, ...] = ()  # names it may define

    def __call__(self, ctx: Any) -> Outcome:
        values = _declared(ctx, self.declared, self.optional)
        early = VALUE_PROBLEMS.get(self.rule)
        problem = early(values, **self.params) if early else None
        return problem or MODEL_RULES[self.rule](self.recipe.describe(ctx), values, **self.params)  # rules guard

    def to_bundle(self, seed: int, resources: Any) -> dict:
        return {"kind": "model-rule", "recipe": self.recipe.to_bundle(resources), "rule": self.rule,
                "params": self.params, "declared": list(self.declared), "optional": list(self.optional)}

    @classmethod
    def from_bundle(cls, data: dict, **_: Any) -> ModelRule:
        from grader.checks.recipes import recipe_from_bundle

        return cls(recipe=recipe_from_bundle(data["recipe"]), rule=data["rule"], params=dict(data["params"]),
                   declared=tuple(data["declared"]), optional=tuple(data["optional"]))


# --------------------------------------------------------------------------
# Training budgets the student chooses within the spec's rules


@dataclass(frozen=True)
class TrainingDict:
    """The notebook's TRAINING dict within caps; the default when it defines none. With `key`, the settings
    are TRAINING[key] (one dict per task, as toy-2d's TRAINING["xor"]), the default when that key is absent."""

    default: Budget
    caps: BudgetCaps
    name: str = "TRAINING"
    key: str | None = None

    def choose(self, ctx: Any) -> BudgetChoice:
        return student_budget(ctx, default=self.default, caps=self.caps, name=self.name, key=self.key)


@dataclass(frozen=True)
class LearningRate:
    """A fixed optimizer, epochs and batch size at the notebook's learning rate, used as given."""

    optimizer: str
    epochs: int
    batch_size: int
    name: str = "LEARNING_RATE"

    def choose(self, ctx: Any) -> BudgetChoice:
        try:
            value = ctx.get(self.name)
        except StudentError as exc:
            return BudgetChoice(None, refused=exc.message)
        problem = learning_rate_problem(value, self.name)
        if problem:
            return BudgetChoice(None, refused=problem)
        return BudgetChoice(Budget(optimizer=self.optimizer, lr=float(value), epochs=self.epochs,
                                   batch_size=self.batch_size))


BUDGETS = {"training-dict": TrainingDict, "learning-rate": LearningRate}


def budget_to_bundle(source: Any) -> dict:
    kind = next(name for name, cls in BUDGETS.items() if isinstance(source, cls))
    data = dataclasses.asdict(source)
    if data.get("key", "") is None:
        del data["key"]  # a whole TRAINING dict: its bundle entry stays as it was before keys existed
    return {"kind": kind, **data}


def budget_from_bundle(data: dict) -> Any:
    data = dict(data)
    cls = BUDGETS[data.pop("kind")]
    if cls is TrainingDict:
        caps = data["caps"]
        return TrainingDict(default=Budget(**data["default"]), name=data["name"], key=data.get("key"),
                            caps=BudgetCaps(max_epochs=caps["max_epochs"], batch_range=tuple(caps["batch_range"]),
                                            optimizers=tuple(caps["optimizers"]), losses=tuple(caps["losses"])))
    return cls(**data)


@dataclass(frozen=True)
class ValueRule:
    """A rule on a declared value alone: the learning rate a student chose, say."""

    budget: Any  # LearningRate

    def __call__(self, ctx: Any) -> Outcome:
        choice = self.budget.choose(ctx)
        if choice.budget is None:
            return Outcome.failed(f"{choice.refused}: set it to the learning rate you found best")
        return Outcome.passed(f"{self.budget.name} = {choice.budget.lr:g}; the grader trains with "
                              f"{self.budget.optimizer.capitalize()} at this rate")

    def to_bundle(self, seed: int, resources: Any) -> dict:
        return {"kind": "value-rule", "budget": budget_to_bundle(self.budget)}

    @classmethod
    def from_bundle(cls, data: dict, **_: Any) -> ValueRule:
        return cls(budget=budget_from_bundle(data["budget"]))


# --------------------------------------------------------------------------
# The grader's training, scored


@dataclass(frozen=True)
class Preview:
    """A short training instead of the graded one (`grader check` without --train)."""

    epochs: int = 1
    train_rows: int = 2000


def _accuracy(run, recipe, ctx, notes, **params) -> Outcome:
    if recipe.task.kind == "binary":  # one output, a probability or a logit: as two columns of scores
        from grader.ml.metrics import two_class_run

        run = two_class_run(run, recipe.describe(ctx).output_kind)
    return rules.accuracy_outcome(run, recipe.data(ctx), notes=notes, factory=recipe.task.call, **params)


def _mse(run, recipe, ctx, notes, *, floor: float, target: float, pretrained_mse: float) -> Outcome:
    """Test MSE against fixed thresholds (no baselines): full credit at or below `target`, none at `floor`."""
    from grader.ml.metrics import regression_details

    data = recipe.data(ctx)
    return rules.mse_outcome(run, data, floor=floor, target=target, pretrained_mse=pretrained_mse,
                             notes=_squash_note(recipe, ctx, notes), factory=recipe.task.call,
                             **regression_details(run, data, scatter_labels=None))


def _squash_note(recipe, ctx, notes) -> list[str]:
    if rules.output_squashing(recipe.describe(ctx)):
        return [*notes, "the activation on the output limits what the model can predict (see no-output-activation)"]
    return list(notes)


def _baseline_mse(recipe, ctx, name: str) -> float:
    from grader.ml.metrics import mean_squared_error

    return mean_squared_error(getattr(recipe.baselines(ctx), name).predictions, recipe.data(ctx).test_y)


def _mse_below_baseline(run, recipe, ctx, notes, *, baseline: str, title: str) -> Outcome:
    return rules.mse_below(run, recipe.data(ctx), baseline_mse=_baseline_mse(recipe, ctx, baseline), baseline=title,
                           notes=_squash_note(recipe, ctx, notes))


def _mse_near_baseline(run, recipe, ctx, notes, *, reference: str, floor: str, factor: float, reference_title: str,
                       floor_title: str) -> Outcome:
    from grader.checks.recipes import comparison_table
    from grader.ml.metrics import regression_details

    data = recipe.data(ctx)
    details = {"table": comparison_table(run, data, recipe.baselines(ctx), recipe.describe(ctx).total_params),
               **regression_details(run, data)}
    return rules.mse_near(run, data, reference_mse=_baseline_mse(recipe, ctx, reference), factor=factor,
                          floor_mse=_baseline_mse(recipe, ctx, floor), reference=reference_title, floor=floor_title,
                          notes=_squash_note(recipe, ctx, notes), **details)


SCORE_JUDGES: dict[str, Callable[..., Outcome]] = {
    "accuracy": _accuracy,
    "mse": _mse,
    "mse-below-baseline": _mse_below_baseline,
    "mse-near-baseline": _mse_near_baseline,
}


@dataclass(frozen=True)
class ModelScore:
    recipe: Any  # a grader.checks.recipes.ModelRecipe
    budget: Any  # TrainingDict | LearningRate
    judge: str
    params: dict = field(default_factory=dict)
    rules: tuple[tuple[str, dict], ...] = ()  # model rules the model must pass to be trained at all
    preview: Preview | None = None

    def __call__(self, ctx: Any) -> Outcome:
        choice = self.budget.choose(ctx)
        description_rules = tuple(
            (lambda d, name=name, params=params: MODEL_RULES[name](d, {}, **params)) for name, params in self.rules)
        if self.preview is not None:
            return self._preview(ctx, choice, description_rules)
        run = self.recipe.trained(ctx, choice, rules=description_rules)
        if isinstance(run, Outcome):
            return run
        outcome = SCORE_JUDGES[self.judge](run, self.recipe, ctx, choice.notes, **self.params)
        extra = self.recipe.feedback(run, ctx)
        return replace(outcome, details={**outcome.details, **extra}) if extra else outcome

    def _preview(self, ctx: Any, choice: BudgetChoice, description_rules) -> Outcome:
        if choice.budget is not None:
            choice = replace(choice, budget=self.recipe.preview_budget(choice.budget, self.preview))
        preview = self.preview
        assert preview is not None, "a preview runs only where the check has one"
        run = self.recipe.trained(ctx, choice, rules=description_rules, train_rows=preview.train_rows)
        if isinstance(run, Outcome):
            return run
        return self.recipe.preview_outcome(run, ctx, rows=preview.train_rows)

    def to_bundle(self, seed: int, resources: Any) -> dict:
        return {"kind": "model-score", "recipe": self.recipe.to_bundle(resources), "judge": self.judge,
                "params": self.params, "budget": budget_to_bundle(self.budget),
                "rules": [[name, params] for name, params in self.rules]}

    @classmethod
    def from_bundle(cls, data: dict, *, preview: Preview | None = None, **_: Any) -> ModelScore:
        from grader.checks.recipes import recipe_from_bundle

        return cls(recipe=recipe_from_bundle(data["recipe"]), budget=budget_from_bundle(data["budget"]),
                   judge=data["judge"], params=dict(data["params"]),
                   rules=tuple((name, dict(params)) for name, params in data["rules"]), preview=preview)


KINDS: dict[str, type[Probed | ModelRule | ValueRule | ModelScore]] = {
    "probed": Probed, "model-rule": ModelRule, "value-rule": ValueRule, "model-score": ModelScore}


def replayable(run: Any) -> TypeGuard[Probed | ModelRule | ValueRule | ModelScore]:
    return isinstance(run, tuple(KINDS.values()))


def from_bundle(data: dict, *, preview: Preview | None = None) -> Any:
    return KINDS[data["kind"]].from_bundle(data, preview=preview)
