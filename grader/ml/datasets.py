"""Datasets from a data root, with the standard loaders; downloads only when asked.

The data root is `--data-root`, else `GRADER_DATA`, else ~/.cache/grader/data.
MNIST and Fashion-MNIST are read by torchvision (root/MNIST/raw/...);
California housing from root/california_housing/cal_housing.csv (the raw
StatLib columns) or scikit-learn's cache under root/scikit_learn_data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grader.errors import UsageError
from grader.locations import ALL_DATASETS, IMAGE_DATASETS


class DatasetMissing(Exception):
    """The dataset is not under the data root; the message says how to get it."""


@dataclass(frozen=True)
class ImageData:
    """A labelled image dataset as uint8 arrays: images (N, 28, 28), labels (N,)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]

    @property
    def version(self) -> str:
        """Identifies the data (for caches): sizes and a checksum of the labels."""
        import zlib

        crc = zlib.crc32(self.train_labels.tobytes() + self.test_labels.tobytes())
        return f"{self.name}-{len(self.train_labels)}-{len(self.test_labels)}-{crc:08x}"


def load_images(dataset: str, root: Path, *, cache: Path | None = None) -> ImageData:
    """The dataset's arrays; with `cache`, decoded once and then read back as .npy.

    torchvision is the loader, but importing it takes seconds: a batch of
    hundreds of submissions in fresh worker processes should pay that once.
    """
    if dataset not in IMAGE_DATASETS:
        raise UsageError(f"unknown image dataset {dataset!r}; known: {', '.join(IMAGE_DATASETS)}")
    folder = _cache_folder(dataset, root, cache)
    if folder is not None and folder.is_dir():
        try:
            return _read_cached(dataset, folder)
        except (OSError, ValueError, KeyError):
            import shutil

            shutil.rmtree(folder, ignore_errors=True)  # damaged: rebuilt below
    data = _load_with_torchvision(dataset, root)
    if folder is not None:
        _write_cached(data, folder)
    return data


_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def _cache_folder(dataset: str, root: Path, cache: Path | None) -> Path | None:
    """Where this exact copy of the dataset is cached: keyed by its raw files' names, sizes and times."""
    raw = Path(root) / IMAGE_DATASETS[dataset] / "raw"
    if cache is None or not raw.is_dir():
        return None
    import hashlib

    digest = hashlib.sha256(str(raw.resolve()).encode())
    for path in sorted(raw.iterdir()):
        info = path.stat()
        digest.update(f"{path.name}:{info.st_size}:{info.st_mtime_ns};".encode())
    return Path(cache) / "datasets" / f"{dataset}-{digest.hexdigest()[:16]}"


def _read_cached(dataset: str, folder: Path) -> ImageData:
    import json

    arrays = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
    classes = json.loads((folder / "classes.json").read_text())
    return ImageData(name=dataset, classes=tuple(str(c) for c in classes), **arrays)


def _write_cached(data: ImageData, folder: Path) -> None:
    import json
    import shutil
    import tempfile

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError:
        return  # no cache this time; the data is loaded all the same
    try:
        for name in _ARRAYS:
            np.save(tmp / f"{name}.npy", getattr(data, name), allow_pickle=False)
        (tmp / "classes.json").write_text(json.dumps(list(data.classes)))
        tmp.rename(folder)  # all or nothing; a concurrent writer's copy wins just as well
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_with_torchvision(dataset: str, root: Path) -> ImageData:
    import torchvision

    cls = getattr(torchvision.datasets, IMAGE_DATASETS[dataset])
    try:
        train, test = cls(str(root), train=True, download=False), cls(str(root), train=False, download=False)
    except RuntimeError:
        raise DatasetMissing(f"{dataset} is not under {root}: run `grader data fetch {dataset}` on a machine "
                             "that is online, or point --data-root / GRADER_DATA at a copy") from None
    return ImageData(name=dataset, train_images=train.data.numpy(), train_labels=train.targets.numpy(),
                     test_images=test.data.numpy(), test_labels=test.targets.numpy(),
                     classes=tuple(str(c) for c in train.classes))


CALIFORNIA_FEATURES = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup",
                       "Latitude", "Longitude")


@dataclass(frozen=True)
class TabularData:
    features: np.ndarray  # (N, 8) float64
    target: np.ndarray  # (N,) float64, in units of 100k$
    feature_names: tuple[str, ...]
    source: str

    @property
    def version(self) -> str:
        """Identifies the data (for caches): its size and a checksum of every value."""
        import zlib

        crc = zlib.crc32(np.ascontiguousarray(self.features).tobytes() + np.ascontiguousarray(self.target).tobytes())
        return f"california-housing-{len(self.target)}-{crc:08x}"


def load_california_housing(root: Path) -> TabularData:
    """scikit-learn's 8 features and target, from the raw CSV or scikit-learn's cache."""
    csv = Path(root) / "california_housing" / "cal_housing.csv"
    if csv.exists():
        # a structured array, one field per column (names=True), which numpy's stubs type as a plain one
        raw: Any = np.genfromtxt(csv, delimiter=",", names=True, dtype=np.float64)
        households = raw["households"]
        features = np.column_stack([
            raw["median_income"], raw["housing_median_age"], raw["total_rooms"] / households,
            raw["total_bedrooms"] / households, raw["population"], raw["population"] / households,
            raw["latitude"], raw["longitude"]])
        return TabularData(features, raw["median_house_value"] / 100_000.0, CALIFORNIA_FEATURES, str(csv))
    from sklearn.datasets import fetch_california_housing

    try:
        bunch = fetch_california_housing(data_home=str(Path(root) / "scikit_learn_data"),
                                         download_if_missing=False)
    except OSError:
        raise DatasetMissing(f"california-housing is not under {root}: run `grader data fetch "
                             "california-housing` on a machine that is online, or point --data-root / "
                             "GRADER_DATA at a copy") from None
    return TabularData(np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.float64),
                       tuple(bunch.feature_names), "scikit-learn cache")


def fetch(dataset: str, root: Path) -> str:
    """Download one dataset into the root (needs the network). It is downloaded into a folder of its own
    beside the root and moved into place only once complete: a download that fails leaves nothing behind."""
    if dataset not in ALL_DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; known: {', '.join(ALL_DATASETS)}")
    root.mkdir(parents=True, exist_ok=True)
    folder = IMAGE_DATASETS.get(dataset, "scikit_learn_data")
    staging = Path(tempfile.mkdtemp(prefix=f".fetch-{dataset}-", dir=root))
    try:
        if dataset in IMAGE_DATASETS:
            import torchvision

            cls = getattr(torchvision.datasets, IMAGE_DATASETS[dataset])
            for train in (True, False):
                cls(str(staging), train=train, download=True)
        else:
            from sklearn.datasets import fetch_california_housing

            fetch_california_housing(data_home=str(staging / folder), download_if_missing=True)
        _move_into(staging / folder, root / folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"{dataset}: downloaded to {root / folder}"


def _move_into(source: Path, target: Path) -> None:
    """Move what `source` holds into `target`, file by file, each with one rename."""
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, destination)


def describe(dataset: str, root: Path) -> str:
    """One line: what is present for a dataset under the root."""
    try:
        if dataset in IMAGE_DATASETS:
            data = load_images(dataset, root)
            return (f"{dataset}: present ({len(data.train_labels):,} training and {len(data.test_labels):,} "
                    f"test images) in {root / IMAGE_DATASETS[dataset]}")
        table = load_california_housing(root)
        return f"{dataset}: present ({len(table.target):,} rows) from {table.source}"
    except DatasetMissing:
        return f"{dataset}: missing (grader data fetch {dataset})"
