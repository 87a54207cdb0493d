"""The recipe shared by image-classification assignments (mlp-1500, deep-mlp, ...).

An assignment spec creates one `ImageClassification` and calls it from its
checks; the data is loaded once per process and the model described and
trained once per submission.
"""

from __future__ import annotations

from dataclasses import dataclass

from grader.assignment import ResourceRequest
from grader.context import CheckContext
from grader.data import load_images
from grader.models import (Budget, ModelDescription, ModelTask, TaskData, TrainingRun, describe_model,
                           image_task_data, train_model)


@dataclass(frozen=True)
class ImageClassification:
    dataset: str  # "mnist" | "fashion-mnist"
    seed: int
    task: ModelTask = ModelTask(kind="classification", n_outputs=10)

    def resources(self, request: ResourceRequest) -> TaskData:
        return image_task_data(load_images(self.dataset, request.data_root, cache=request.cache_dir),
                               seed=self.seed)

    def describe(self, ctx: CheckContext) -> ModelDescription:
        return describe_model(ctx, self.task, ctx.resources)

    def train(self, ctx: CheckContext, budget: Budget) -> TrainingRun:
        return train_model(ctx, self.task, ctx.resources, self.describe(ctx), budget)
