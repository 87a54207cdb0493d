"""What tests/test_gradescope.py and tests/test_prairielearn.py share: schemas, a base directory
every user may cross (so that the grader's own closing of the LMS tree is what is tested), the
sandbox user an LMS image creates, and a notebook that tries to read the spec and to write the
LMS's results file.

Inside the simulated container the kernel runs as `grader-student` (uid 64999), the user the
bundle's setup.sh and the PrairieLearn image create, added to a copy of /etc/passwd bound over
the real one in the container's mount namespace: the machine's users do not change, and the
sweep of the sandbox user's processes cannot touch another test's kernels running as nobody.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import jsonschema

from conftest import REPO, TEMPLATES, load, save, with_cell
from grader.results import result_schema

STUDENT = "grader-student"
STUDENT_IDS = (64999, 64999)


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "tests" / "schemas" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(check: jsonschema.Draft202012Validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in check.iter_errors(document)]


def result_json_problems(path: Path) -> list[str]:
    """The staff copy of result.json against the grader's own schema."""
    return problems(jsonschema.Draft202012Validator(result_schema()), json.loads(path.read_text()))


class OpenBase:
    """A directory under /tmp that every user may cross (0755), removed afterwards; in it a
    witness folder that only the sandbox user writes (and that no sweep removes), and the
    container's /etc/passwd with the sandbox user in it."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="grader-lms-"))
        os.chmod(self.path, 0o755)
        witness = self.path / "witness"
        witness.mkdir()
        os.chown(witness, *STUDENT_IDS)
        passwd = self.path / "passwd"
        passwd.write_text(Path("/etc/passwd").read_text().rstrip("\n") + "\n"
                          f"{STUDENT}:x:{STUDENT_IDS[0]}:{STUDENT_IDS[1]}::/nonexistent:/usr/sbin/nologin\n")
        passwd.chmod(0o644)
        return self.path

    def __exit__(self, *exc_info) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def container_binds(base: Path) -> list[tuple[Path, Path]]:
    """For containers.run_in_container: the passwd (made by OpenBase) that knows the sandbox user."""
    return [(base / "passwd", Path("/etc/passwd"))]


def attack_notebook(dest: Path, *, spec: Path, results_file: Path, witness: Path) -> Path:
    """The gradient-descent template with a cell that tries to read the spec and to forge the
    LMS's results file, and writes down in `witness` what happened."""
    attack = (
        "import json, os\n"
        f"spec, results, witness = {str(spec)!r}, {str(results_file)!r}, {str(witness)!r}\n"
        "def note(name, text):\n"
        "    try:\n        open(os.path.join(witness, name), 'w').write(str(text))\n"
        "    except OSError:\n        pass\n"
        "try:\n    note('read-spec', open(spec).read()[:200])\nexcept OSError as e:\n    note('refused-spec', e)\n"
        "try:\n    os.makedirs(os.path.dirname(results), exist_ok=True)\n"
        "    json.dump({'score': 1000.0, 'gradable': True, 'tests': []}, open(results, 'w'))\n"
        "    note('wrote-results', 'yes')\nexcept OSError as e:\n    note('refused-results', e)\n")
    return save(with_cell(load(TEMPLATES / "gradient_descent.ipynb"), attack, after=1), dest)
