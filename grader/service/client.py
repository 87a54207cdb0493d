"""A student's side of the service: upload a notebook, wait for its grade (`grader submit --to`, and
grader.student.submit in a notebook)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

from grader.errors import UsageError

POLL_S = 2.0
WAIT_LIMIT_S = 1800.0


@dataclass(frozen=True)
class Submitted:
    id: str
    status: str
    score: float | None
    max_score: float | None
    message: str
    feedback_url: str | None

    def describe(self) -> str:
        if self.status == "graded" and self.score is not None:
            return f"score: {self.score:g} / {self.max_score:g}\nfeedback: {self.feedback_url}"
        if self.status == "graded":
            return f"not gradable: {self.message}\nfeedback: {self.feedback_url}"
        if self.status == "failed":
            return f"not graded: {self.message} (tell the course staff)"
        return f"accepted as {self.id}: {self.status} (see the service's page for its feedback)"


def submit_to_service(notebook: Path, url: str, token: str, *, assignment: str | None = None, wait: bool = True,
                      progress: Callable[[str], None] = lambda _: None, poll_s: float = POLL_S) -> Submitted:
    import httpx

    base = url if url.endswith("/") else url + "/"
    if not base.startswith(("http://", "https://")):
        raise UsageError(f"--to {url}: give the service's address, starting with https:// (or http://)")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
        try:
            with open(notebook, "rb") as file:
                answer = client.post("api/submissions", files={"notebook": (Path(notebook).name, file)},
                                     data={"assignment": assignment} if assignment else {})
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise UsageError(f"cannot reach the grading service at {url} ({exc})") from None
        record = _json_or_error(answer, notebook)
        progress(f"{Path(notebook).name}: accepted ({record['status']})")
        started = time.monotonic()
        while wait and record["status"] in ("queued", "grading") and time.monotonic() - started < WAIT_LIMIT_S:
            time.sleep(poll_s)
            try:
                record = _json_or_error(client.get(f"api/submissions/{record['id']}"), notebook)
            except httpx.HTTPError:  # a busy or restarting service: the upload is safe there, ask again
                continue
    feedback = urljoin(base, record["feedback"].lstrip("/")) if record.get("feedback") else None
    return Submitted(record["id"], record["status"], record.get("score"), record.get("max_score"),
                     record.get("message", ""), feedback)


def _json_or_error(answer, notebook: Path) -> dict:
    if answer.status_code >= 400:
        try:
            detail = answer.json().get("detail", answer.text)
        except ValueError:
            detail = answer.text[:300]
        raise UsageError(f"{Path(notebook).name}: the service refused it ({answer.status_code}: {detail})")
    return answer.json()
