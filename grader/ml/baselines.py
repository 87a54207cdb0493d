"""Baseline models the grader fits itself with scikit-learn, cached per data version.

A regression assignment compares the student's network with a linear
regression and a random forest fitted on the same standardised arrays. The
forest takes seconds, and every submission of a batch compares with the same
one, so the baselines' test predictions are kept twice:

- in memory, with the assignment's resources, by the process's warm state
  (grader.grading.warm);
- on disk under the grader's cache directory (batch workers are separate
  processes), one JSON file per key. The key is a hash of the exact arrays,
  the baseline settings and the scikit-learn version, so new data, new
  settings or a new scikit-learn never reuse an old fit. Files are written
  atomically (temporary file, then rename) while holding a lock, so workers
  starting together fit once; a file that does not parse, does not match its
  key or fails its checksum is fitted again and replaced, never trusted.

Only predictions and counts are stored (JSON, no pickle): metrics are
computed from them and the test targets each time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.files import write_atomically
from grader.ml.task import TaskData

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the file layout changes
BASELINE_NAMES = ("linear", "forest")


@dataclass(frozen=True)
class ForestSettings:
    """RandomForestRegressor's settings; n_jobs changes speed, not the fit, so it is not in the key."""

    n_estimators: int = 100
    min_samples_leaf: int = 2
    max_features: float = 1.0
    random_state: int = 0
    n_jobs: int = -1

    def key_fields(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "n_jobs"}


@dataclass(frozen=True)
class Baseline:
    name: str  # "linear" | "forest"
    title: str  # what a student reads: "linear regression", "random forest (100 trees)"
    predictions: np.ndarray  # (n_test,) float64, in the order of data.test_x
    size: int  # linear: coefficients and intercept; forest: nodes in all trees
    fit_s: float


@dataclass(frozen=True)
class Baselines:
    linear: Baseline
    forest: Baseline
    key: str
    source: str  # "fitted" | "disk": where this call got them (a process keeps them with its resources)
    seconds: float  # how long this call took


def regression_baselines(data: TaskData, *, cache_dir: Path | None,
                         forest: ForestSettings = ForestSettings()) -> Baselines:
    """Linear regression and random forest test predictions for `data`, fitted at most once per key."""
    started = time.monotonic()
    key = cache_key(data, forest)
    path = Path(cache_dir) / "baselines" / f"{key}.json" if cache_dir is not None else None
    with _locked(path):
        found = _read(path, key, n_test=len(data.test_x)) if path is not None else None
        source = "disk"
        if found is None:
            found, source = _fit(data, forest), "fitted"
            if path is not None:
                _write(path, key, found)
    return _baselines(found, key, source, started)


def _baselines(pair: tuple[Baseline, Baseline], key: str, source: str, started: float) -> Baselines:
    return Baselines(linear=pair[0], forest=pair[1], key=key, source=source,
                     seconds=time.monotonic() - started)


def cache_key(data: TaskData, forest: ForestSettings) -> str:
    import sklearn

    digest = hashlib.sha256()
    for array in (data.train_x, data.train_y, data.test_x):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    settings = {"format": FORMAT, "sklearn": sklearn.__version__, "forest": forest.key_fields()}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:32]


# --------------------------------------------------------------------------
# Fitting


def _fit(data: TaskData, settings: ForestSettings) -> tuple[Baseline, Baseline]:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LinearRegression

    x, y = np.asarray(data.train_x), np.asarray(data.train_y, dtype=np.float64)
    started = time.monotonic()
    linear = LinearRegression().fit(x, y)
    linear_s = time.monotonic() - started
    started = time.monotonic()
    forest = RandomForestRegressor(**dataclasses.asdict(settings)).fit(x, y)
    forest.set_params(n_jobs=1)  # predictions summed in parallel differ in the last bit from run to run
    forest_s = time.monotonic() - started
    log.info("fitted the baselines: linear %.2f s, forest %.2f s", linear_s, forest_s)
    return (
        Baseline("linear", "linear regression", _predict(linear, data.test_x),
                 int(linear.coef_.size + np.size(linear.intercept_)), linear_s),
        Baseline("forest", f"random forest ({settings.n_estimators} trees)", _predict(forest, data.test_x),
                 int(sum(tree.tree_.node_count for tree in forest.estimators_)), forest_s),
    )


def _predict(model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x), dtype=np.float64).reshape(-1)


# --------------------------------------------------------------------------
# The disk cache


def _checksum(models: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(models, sort_keys=True).encode()).hexdigest()


def _write(path: Path, key: str, pair: tuple[Baseline, Baseline]) -> None:
    models = {b.name: {"title": b.title, "size": b.size, "fit_s": round(b.fit_s, 3),
                       "predictions": b.predictions.tolist()} for b in pair}
    record = {"format": FORMAT, "key": key, "models": models, "checksum": _checksum(models)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(record).encode())
    except OSError as exc:
        log.warning("could not cache the baselines in %s: %s", path, exc)  # write_atomically left no partial


def _read(path: Path, key: str, *, n_test: int) -> tuple[Baseline, Baseline] | None:
    """The cached pair, or None when there is none or it cannot be trusted."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        models = record["models"]
        if record.get("format") != FORMAT or record.get("key") != key or record.get("checksum") != _checksum(models):
            raise ValueError("format, key or checksum does not match")
        linear, forest = (_baseline(name, models[name], n_test) for name in BASELINE_NAMES)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the cached baselines in %s (%s): fitting them again", path, exc)
        return None
    return linear, forest


def _baseline(name: str, entry: Any, n_test: int) -> Baseline:
    predictions = np.asarray(entry["predictions"], dtype=np.float64)
    if predictions.shape != (n_test,) or not np.all(np.isfinite(predictions)):
        raise ValueError(f"{name}: predictions of shape {predictions.shape}")
    size, fit_s, title = entry["size"], entry["fit_s"], entry["title"]
    if not (isinstance(size, int) and size > 0 and isinstance(fit_s, (int, float)) and math.isfinite(fit_s)
            and isinstance(title, str)):
        raise ValueError(f"{name}: malformed entry")
    return Baseline(name, title[:100], predictions, size, float(fit_s))


@contextlib.contextmanager
def _locked(path: Path | None) -> Iterator[None]:
    """Hold an exclusive lock beside `path` (where the OS has flock), so one process fits and others wait."""
    handle = None
    if path is not None:
        try:
            import fcntl

            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - closed below
            fcntl.flock(handle, fcntl.LOCK_EX)
        except (ImportError, OSError) as exc:  # at worst two processes fit the same baselines
            log.info("fitting the baselines without a lock: %s", exc)
            if handle is not None:
                handle.close()
                handle = None
    try:
        yield
    finally:
        if handle is not None:
            handle.close()  # releases the lock
