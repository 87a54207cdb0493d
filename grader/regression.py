"""The recipe shared by tabular regression assignments (regression-vs-forest, ...).

An assignment spec creates one `TabularRegression` and calls it from its
checks. Once per process it loads the data, splits and standardises it as
scikit-learn users do, and gets the baselines (fitted once per data version,
see grader.baselines); once per submission it describes and trains the
student's model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from grader.assignment import ResourceRequest
from grader.baselines import Baselines, ForestSettings, regression_baselines
from grader.context import CheckContext
from grader.data import TabularData, load_california_housing
from grader.models import (Budget, ModelDescription, ModelTask, TaskData, TrainingRun, describe_model,
                           mean_absolute_error, mean_squared_error, train_model)

LOADERS = {"california-housing": load_california_housing}


def tabular_task_data(table: TabularData, *, seed: int, test_size: float = 0.33, random_state: int = 42
                      ) -> TaskData:
    """sklearn's train_test_split, then StandardScaler fitted on the training split only.

    The child gets float32 features and training targets; the test rows go in a secret
    order (as image tasks do) and their targets stay in test_y, in the parent.
    """
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    train_x, test_x, train_y, test_y = train_test_split(table.features, table.target, test_size=test_size,
                                                        random_state=random_state)
    scaler = StandardScaler().fit(train_x)
    order = np.random.default_rng([seed, 7919]).permutation(len(test_y))
    return TaskData(name="california-housing", version=f"{table.version}-split-{test_size:g}-{random_state}",
                    train_x=scaler.transform(train_x).astype(np.float32), train_y=train_y.astype(np.float32),
                    test_x=scaler.transform(test_x)[order].astype(np.float32),
                    test_y=np.asarray(test_y, dtype=np.float64)[order])


@dataclass(frozen=True)
class RegressionResources:
    """What checks see as ctx.resources."""

    data: TaskData
    baselines: Baselines


@dataclass(frozen=True)
class TabularRegression:
    seed: int
    task: ModelTask
    dataset: str = "california-housing"
    forest: ForestSettings = field(default_factory=ForestSettings)

    def resources(self, request: ResourceRequest) -> RegressionResources:
        data = tabular_task_data(LOADERS[self.dataset](request.data_root), seed=self.seed)
        return RegressionResources(data=data, baselines=regression_baselines(data, cache_dir=request.cache_dir,
                                                                             forest=self.forest))

    def describe(self, ctx: CheckContext) -> ModelDescription:
        return describe_model(ctx, self.task, ctx.resources.data)

    def train(self, ctx: CheckContext, budget: Budget) -> TrainingRun:
        return train_model(ctx, self.task, ctx.resources.data, self.describe(ctx), budget)


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
