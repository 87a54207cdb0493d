"""`grader gradescope build`: the autograder zip an instructor uploads to Gradescope as it is.

The zip holds exactly (Gradescope unpacks it into /autograder/source):

    setup.sh                 run once, as root, when Gradescope builds the image (Ubuntu 22.04)
    run_autograder           run for every submission; runs `grader gradescope run`
    constraints.txt          every package pinned to this environment's version (setup.sh installs with it)
    grader-<version>-*.whl   the grader itself, built from this checkout (or --wheel)
    solutions/<spec>.py      the assignment's spec and nothing else of the course: no notebook
    data/...                 with --data ship (the default): the files the loaders read, only
                             for the datasets the assignment needs

Datasets are shipped by default so that the image never depends on a download mirror (MNIST's
have gone away before) and grades with the very files staff tested with; `--data fetch` makes
setup.sh run `grader data fetch` instead, for a smaller zip.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import grader
from grader.course.assignment import Assignment
from grader.errors import HarnessError, UsageError
from grader.ml.datasets import ALL_DATASETS, IMAGE_DATASETS

DATA_MODES = ("ship", "fetch")
SANDBOX_USER = "grader-student"
PREFIX = "/opt/grader"  # the venv lives outside /autograder, which is closed to the sandbox user
IMAGE_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")  # what torchvision reads from <root>/<Name>/raw/
CALIFORNIA_FILES = ("california_housing/cal_housing.csv", "scikit_learn_data/cal_housing_py3.pkz")  # either
NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "grader-out",
                                    ".pytest_cache", "*.whl", "*.zip")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same inputs make the same zip


@dataclass(frozen=True)
class Bundle:
    path: Path
    members: tuple[str, ...]
    datasets: tuple[str, ...]
    data_mode: str


def build_bundle(assignment: Assignment, out: Path, *, data_mode: str = "ship", data_root: Path,
                 wheel: Path | None = None, datasets: tuple[str, ...] | None = None) -> Bundle:
    """Write the zip for one assignment; return what went in."""
    if data_mode not in DATA_MODES:
        raise UsageError(f"--data must be ship or fetch, not {data_mode!r}")
    if assignment.source is None or not Path(assignment.source).is_file():
        raise UsageError(f"the spec of {assignment.id} is not a file the bundle can ship")
    needed = datasets_of(assignment) if datasets is None else tuple(datasets)
    shipped = [f for d in needed for f in dataset_files(d, data_root)] if data_mode == "ship" else []
    with tempfile.TemporaryDirectory(prefix="grader-bundle-") as tmp:
        wheel = checked_wheel(wheel) if wheel is not None else build_wheel(Path(tmp))
        entries: list[tuple[str, bytes | Path, int]] = [
            ("setup.sh", setup_script(wheel_name=wheel.name, datasets=needed, data_mode=data_mode).encode(), 0o755),
            ("constraints.txt", constraints_text().encode(), 0o644),
            ("run_autograder", run_script(assignment_id=assignment.id).encode(), 0o755),
            (wheel.name, wheel, 0o644),
            (f"solutions/{Path(assignment.source).name}", Path(assignment.source), 0o644),
            *((f"data/{relative}", data_root / relative, 0o644) for relative in shipped),
        ]
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, content, mode in entries:
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.external_attr = (0o100000 | mode) << 16  # a regular file with these permission bits
                info.compress_type = zipfile.ZIP_DEFLATED
                data = content if isinstance(content, bytes) else content.read_bytes()
                archive.writestr(info, data)
        partial.replace(out)
    return Bundle(out, tuple(name for name, _, _ in entries), needed, data_mode)


# --------------------------------------------------------------------------
# Datasets


def datasets_of(assignment: Assignment) -> tuple[str, ...]:
    """The datasets an assignment's resources load: its recipe's `dataset` (ImageClassification,
    TabularRegression), or the `datasets` a recipe names (Toy2D: none, it draws its own data); none when
    it has no resources."""
    if assignment.resources is None:
        return ()
    owner = getattr(assignment.resources, "__self__", None)
    datasets = getattr(owner, "datasets", None)
    if isinstance(datasets, tuple):
        return datasets
    dataset = getattr(owner, "dataset", None)
    if isinstance(dataset, str) and dataset in ALL_DATASETS:
        return (dataset,)
    raise UsageError(f"cannot tell which dataset {assignment.id} needs; name it with --dataset "
                     f"(one of {', '.join(ALL_DATASETS)})")


def dataset_files(dataset: str, data_root: Path) -> list[str]:
    """The files (relative to the data root) the grader's loaders read for one dataset."""
    data_root = Path(data_root)
    if dataset in IMAGE_DATASETS:
        wanted = [f"{IMAGE_DATASETS[dataset]}/raw/{name}" for name in IMAGE_FILES]
        missing = [w for w in wanted if not (data_root / w).is_file()]
        if not missing:
            return wanted
    elif dataset == "california-housing":
        present = [c for c in CALIFORNIA_FILES if (data_root / c).is_file()]
        if present:
            return present[:1]
        missing = list(CALIFORNIA_FILES)
    else:
        raise UsageError(f"unknown dataset {dataset!r}; known: {', '.join(ALL_DATASETS)}")
    raise UsageError(f"{dataset} is not under the data root {data_root} (no {missing[0]}): run `grader data "
                     f"fetch {dataset}`, point --data-root at a copy, or build with --data fetch")


# --------------------------------------------------------------------------
# The wheel


def project_root() -> Path | None:
    """The checkout this grader runs from, when it runs from one (an installed wheel has none)."""
    root = Path(grader.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "grader"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def build_wheel(dest: Path) -> Path:
    """Build the grader's wheel from this checkout, from a copy of it (no build/ is left behind)."""
    root = project_root()
    if root is None:
        raise UsageError("this grader is not running from a checkout, so it cannot build its own wheel: pass "
                         "--wheel PATH (a grader-*.whl, e.g. from `pip wheel --no-deps <checkout>`)")
    source = dest / "src"
    shutil.copytree(root, source, ignore=NOT_SOURCE)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dest / "dist"), str(source)], capture_output=True, text=True, timeout=600)
    wheels = sorted((dest / "dist").glob("grader-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        reason = " ".join((done.stderr or done.stdout).split())[-500:]
        raise HarnessError(f"building the grader's wheel failed: {reason}")
    return wheels[0]


def checked_wheel(path: Path) -> Path:
    path = Path(path)
    if not path.is_file() or not (path.name.startswith("grader-") and path.name.endswith(".whl")):
        raise UsageError(f"--wheel {path}: not a grader-*.whl file")
    return path


# --------------------------------------------------------------------------
# The scripts


def setup_script(*, wheel_name: str, datasets: tuple[str, ...], data_mode: str) -> str:
    if data_mode == "fetch" and datasets:
        data = (f'"$PREFIX/venv/bin/grader" data fetch {" ".join(shlex.quote(d) for d in datasets)} '
                '--data-root "$SOURCE/data"')
    elif datasets:
        data = f"# the datasets ({', '.join(datasets)}) were shipped in the zip, under data/"
    else:
        data = "# this assignment needs no dataset"
    return SETUP_SH.format(prefix=PREFIX, user=SANDBOX_USER, wheel=shlex.quote(wheel_name), data=data)


def run_script(*, assignment_id: str) -> str:
    return RUN_AUTOGRADER.format(prefix=PREFIX, user=SANDBOX_USER, assignment=shlex.quote(assignment_id))


def constraints_text() -> str:
    """pip constraints pinning every package of this environment (the one the course was tested with), so
    that an image rebuilt later installs the same numpy, ipykernel, scikit-learn (which moves the regression
    baseline) and the rest. Local version labels go (torch 2.14.1+cu130 here is 2.14.1 from the CPU index
    there), and so does the grader itself, which comes as the bundle's wheel."""
    from importlib.metadata import distributions

    pins = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").strip()
        if name and name.lower() not in ("grader", "pip", "setuptools", "wheel"):
            pins[name.lower()] = f"{name}=={dist.version.split('+')[0]}"
    header = ("# The environment this course was tested with (written by grader gradescope build); setup.sh\n"
              "# installs with -c constraints.txt, so a rebuilt image gets these versions again.\n")
    return header + "".join(f"{pins[key]}\n" for key in sorted(pins))


SETUP_SH = """\
#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu 22.04 base).
# Written by `grader gradescope build`; see the grader's docs/gradescope.md.
set -euo pipefail
SOURCE=/autograder/source
PREFIX={prefix}
SANDBOX_USER={user}
export DEBIAN_FRONTEND=noninteractive

apt-get update
apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates
# bubblewrap is the strongest sandbox, where the container allows namespaces; where it does not,
# the grader falls back by itself (unshare, then running student code as $SANDBOX_USER)
apt-get install -y --no-install-recommends \\
    bubblewrap || echo "setup.sh: bubblewrap not installed; the grader falls back"

# Python outside /autograder, which is closed to the sandbox user, yet readable by it
python3.11 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --no-cache-dir --upgrade pip
# constraints.txt pins every package to the version the course was tested with
"$PREFIX/venv/bin/pip" install --no-cache-dir -c "$SOURCE/constraints.txt" torch==2.14.1 torchvision==0.29.1 \\
    --index-url https://download.pytorch.org/whl/cpu
"$PREFIX/venv/bin/pip" install --no-cache-dir -c "$SOURCE/constraints.txt" "$SOURCE"/{wheel}
chmod -R a+rX "$PREFIX"

{data}

# the unprivileged user student code runs as, without a login shell or a home
id -u "$SANDBOX_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$SANDBOX_USER"

# the spec, the data (labels and targets), the results: root's only. run_autograder closes
# /autograder again at every run, and the grader refuses to grade if the sandbox user could read them.
chown -R root:root "$SOURCE"
chmod -R go-rwx "$SOURCE"
chmod 0700 /autograder

"$PREFIX/venv/bin/grader" data where --data-root "$SOURCE/data"
"""

RUN_AUTOGRADER = """\
#!/usr/bin/env bash
# Gradescope runs this for every submission, as root, in a fresh container.
# Written by `grader gradescope build`: grades submission/ and writes results/results.json.
# GRADER_GRADESCOPE_ROOT and GRADER_EXECUTABLE exist for tests, which run this in a temporary tree.
ROOT="${{GRADER_GRADESCOPE_ROOT:-/autograder}}"
GRADER="${{GRADER_EXECUTABLE:-{prefix}/venv/bin/grader}}"
export GRADER_SANDBOX_USER="${{GRADER_SANDBOX_USER:-{user}}}"
cd "$ROOT" || exit 1
rm -f "$ROOT/results/results.json"  # a file from before must never stand for this run
"$GRADER" gradescope run --root "$ROOT" --assignment {assignment} \\
    --sandbox "${{GRADER_SANDBOX:-auto}}" --sandbox-user "$GRADER_SANDBOX_USER"
status=$?
if [ ! -s "$ROOT/results/results.json" ]; then
  # The grader failed, not the submission: no results.json, so Gradescope records no score and tells the
  # student the autograder failed; this output (staff only) says why. Regrade once it is fixed.
  echo "run_autograder: the grader could not grade this submission (exit status $status);" \\
    "no results.json was written, so Gradescope records no score"
  exit $(( status == 0 ? 1 : status ))
fi
exit 0
"""


if __name__ == "__main__":  # python -m grader.lms.bundle > constraints.txt (the PrairieLearn image's)
    sys.stdout.write(constraints_text())
