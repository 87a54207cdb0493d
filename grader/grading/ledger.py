"""Which results the grader itself wrote, so that a resumed batch trusts nothing else.

A batch skips a student whose result.json is already there for the same
notebook. Anything that could write into the output directory (a student's
code where the sandbox is weak, a careless script) could then plant a full
score. So every result.json the grader writes gets a signature beside it,
result.json.sig: an HMAC-SHA256 of its bytes under a key that only the
grader's own user can read (in the grader's cache directory, mode 0600,
never inside a sandbox's view). A result whose signature is missing or wrong
is graded again.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from grader.reports.outputs import Rendered, write_rendered
from grader.results import GradeResult

KEY_FILE = "results.key"
SIGNATURE_SUFFIX = ".sig"


class Ledger:
    def __init__(self, key_dir: Path):
        self.key = _load_or_create_key(Path(key_dir) / KEY_FILE)

    def signature(self, content: bytes) -> str:
        return hmac.new(self.key, content, hashlib.sha256).hexdigest()

    def write(self, rendered: Rendered, student_dir: Path) -> list[Path]:
        """Write a student's files; result.json's signature last, once the result is in place."""
        written = write_rendered(rendered, student_dir)
        if "result.json" in rendered:
            signature = self.signature(rendered["result.json"]) + "\n"
            written += write_rendered({f"result.json{SIGNATURE_SUFFIX}": signature.encode()}, student_dir)
        return written

    def trusted_result(self, student_dir: Path) -> GradeResult | None:
        """The result.json in student_dir if the grader wrote it, else None."""
        try:
            content = (Path(student_dir) / "result.json").read_bytes()
            signature = (Path(student_dir) / f"result.json{SIGNATURE_SUFFIX}").read_text().strip()
        except OSError:
            return None
        if not hmac.compare_digest(signature, self.signature(content)):
            return None
        try:
            return GradeResult.from_json(content)
        except (ValueError, TypeError, KeyError):
            return None


def _load_or_create_key(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
        path.unlink()  # damaged: results signed with it are graded again
        return _load_or_create_key(path)
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key
