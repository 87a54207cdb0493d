"""The Dask worker plugin that gives each worker one owner of its warm state: made when the plugin
reaches the worker, closed when the worker stops. Imported only where Dask is (an optional extra)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from distributed import WorkerPlugin

PLUGIN_NAME = "grader"


class Closable(Protocol):
    def close(self) -> None: ...


class WarmWorkerPlugin(WorkerPlugin):
    """Holds `make()` (grader.grading.distributed.WorkerState) for the worker's tasks to use."""

    name = PLUGIN_NAME
    idempotent = True  # a second batch on the same workers keeps what they have warm

    def __init__(self, make: Callable[[], Closable]):
        self.make = make
        self.state: Any = None

    def setup(self, worker) -> None:
        self.state = self.make()

    def teardown(self, worker) -> None:
        if self.state is not None:
            self.state.close()
            self.state = None
