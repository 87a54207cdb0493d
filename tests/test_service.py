"""grader serve, started as a user starts it (a process on a loopback port), used as students and staff
use it: the API, `grader submit --to`, the pages' forms; and killed outright mid-queue."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, SOLUTIONS, TEMPLATES, data_root

GRADER = [sys.executable, "-m", "grader"]
SOLUTION = SOLUTIONS / "gradient_descent.ipynb"
TEMPLATE = TEMPLATES / "gradient_descent.ipynb"


class Service:
    """A `grader serve` process on a free loopback port, its state in `state`."""

    def __init__(self, state: Path, *extra: str):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen(
            [*GRADER, "serve", "--state", str(state), "--port", str(self.port), "--course", str(REPO),
             "--data-root", str(data_root()), "--device", "cpu", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()
        self._wait_until_up()
        # what it printed before it began to listen: its address, and a new database's staff login
        logins = [line.rsplit("#", 1)[1].strip() for line in self._printed() if "first staff login" in line]
        self.staff_token = logins[0] if logins else None

    def _printed(self) -> list[str]:
        deadline = time.monotonic() + 30
        while not any(line.startswith("grader serve: http") for line in self.lines):
            assert time.monotonic() < deadline, self.lines
            time.sleep(0.05)
        return list(self.lines)

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 120  # imports on a busy machine
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"grader serve exited: {self.process.stderr.read()[-3000:]}")
            try:
                if httpx.get(self.url + "api/health", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("grader serve did not answer within 120 s")

    def client(self, token: str | None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60,
                            headers={"Authorization": f"Bearer {token}"} if token else {})

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)  # the server and everything it started
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def service(tmp_path):
    running = Service(tmp_path / "state")
    yield running
    running.stop()


def roster(service: Service, csv_text: str) -> dict[str, str]:
    with service.client(service.staff_token) as staff:
        answer = staff.post("api/staff/roster", files={"roster": ("roster.csv", csv_text.encode())})
    assert answer.status_code == 200, answer.text
    return {row["key"]: row["token"] for row in answer.json()["added"]}


def submit(client: httpx.Client, notebook: Path, **data: str) -> httpx.Response:
    return client.post("api/submissions", files={"notebook": (notebook.name, notebook.read_bytes())}, data=data)


def wait_for(client: httpx.Client, submission_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = client.get(f"api/submissions/{submission_id}").json()
        if record["status"] not in ("queued", "grading"):
            return record
        time.sleep(0.5)
    raise AssertionError(f"{submission_id} was not graded within {timeout_s} s")


def test_a_student_submits_from_the_command_line_and_reads_only_their_own_feedback(service):
    tokens = roster(service, "Student,ID,SIS User ID\n    Points Possible,,\nAda Lovelace,101,ada\nBob,102,bob\n")
    assert set(tokens) == {"101", "102"}  # Canvas's ids kept; its "Points Possible" row is no student
    done = subprocess.run([*GRADER, "submit", str(SOLUTION), "--to", service.url], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "GRADER_TOKEN": tokens["101"]})
    assert done.returncode == 0, done.stderr
    assert "score: 14 / 14" in done.stdout, done.stdout
    feedback_url = re.search(r"feedback: (\S+)", done.stdout).group(1)
    submission_id = feedback_url.split("/")[-2]

    with service.client(tokens["101"]) as ada, service.client(tokens["102"]) as bob, service.client(None) as nobody:
        page = ada.get(feedback_url)
        assert page.status_code == 200 and "14" in page.text and "gradient" in page.text.lower()
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert [s["id"] for s in ada.get("api/submissions").json()] == [submission_id]
        # another student guessing ids, and anyone without a token, learn nothing
        assert bob.get(f"api/submissions/{submission_id}").status_code == 404
        assert bob.get(f"submissions/{submission_id}/feedback").status_code == 404
        assert bob.get("api/submissions").json() == []
        assert bob.post("api/staff/roster", files={"roster": ("r.csv", b"id,name\n9,Eve\n")}).status_code == 403
        assert nobody.get(f"api/submissions/{submission_id}").status_code == 401
        assert nobody.get("api/submissions").status_code == 401
        assert ada.get("openapi.json").json()["paths"]["/api/submissions"]["post"]
    with service.client(service.staff_token) as staff:  # staff see every submission
        assert [s["id"] for s in staff.get("api/submissions").json()] == [submission_id]
        assert staff.get(f"submissions/{submission_id}/feedback").status_code == 200


def test_bad_uploads_are_refused_with_a_message_naming_the_file(tmp_path):
    service = Service(tmp_path / "state", "--per-minute", "2", "--max-upload-mb", "1")
    try:
        token = roster(service, "id,name\ns1,Sam\n")["s1"]
        junk = tmp_path / "gradient_descent.ipynb"
        junk.write_bytes(b"\x00\xffnot json")
        with service.client(token) as sam:
            refused = submit(sam, junk)
            assert refused.status_code == 400 and "gradient_descent.ipynb" in refused.json()["detail"]
            script = tmp_path / "homework.py"
            script.write_text("print(1)\n")
            assert submit(sam, script).status_code == 400
            big = tmp_path / "big.ipynb"
            big.write_bytes(b" " * (2 * 1024 * 1024))
            assert submit(sam, big).status_code == 413
            unknown = submit(sam, TEMPLATE, assignment="no-such-assignment")
            assert unknown.status_code == 400 and "gradient-descent" in unknown.json()["detail"]
            assert [submit(sam, TEMPLATE).status_code for _ in range(3)] == [202, 202, 429]
            assert len(sam.get("api/submissions").json()) == 2  # what was refused was never queued
    finally:
        service.stop()


def test_the_page_form_needs_its_csrf_token(service):
    token = roster(service, "id,name\ns1,Sam\n")["s1"]
    with httpx.Client(base_url=service.url, timeout=60) as browser:
        assert browser.get("/", follow_redirects=False).headers["location"] == "/login"
        assert browser.post("login", data={"token": token}).status_code == 303
        page = browser.get("/")
        assert page.status_code == 200 and token not in page.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
        upload = {"notebook": (TEMPLATE.name, TEMPLATE.read_bytes())}
        forged = browser.post("submit", files=upload, data={"csrf": "0" * 64, "assignment": "gradient-descent"})
        assert forged.status_code == 403
        accepted = browser.post("submit", files=upload, data={"csrf": csrf, "assignment": "gradient-descent"})
        assert accepted.status_code == 303
        assert len(browser.get("api/submissions").json()) == 1


def test_a_server_killed_mid_queue_grades_every_accepted_submission_once(tmp_path):
    state = tmp_path / "state"
    service = Service(state)
    tokens = roster(service, "id,name\n" + "".join(f"s{i},Student {i}\n" for i in range(3)))
    accepted = {}
    for key, token in tokens.items():
        with service.client(token) as student:
            answer = submit(student, SOLUTION)
            assert answer.status_code == 202
            accepted[key] = answer.json()["id"]
    with service.client(service.staff_token) as staff:
        deadline = time.monotonic() + 120
        while not any(s["status"] == "grading" for s in staff.get("api/submissions").json()):
            assert time.monotonic() < deadline, "nothing was being graded"
            time.sleep(0.1)
    service.kill()  # mid-grade: no handler runs, nothing is flushed

    restarted = Service(state)
    try:
        assert restarted.staff_token is None  # the same database: its staff account stands
        for key, token in tokens.items():
            with restarted.client(token) as student:
                record = wait_for(student, accepted[key])
                assert record["status"] == "graded" and record["score"] == 14, record
        with restarted.client(restarted.staff_token or service.staff_token) as staff:
            rows = staff.get("api/submissions").json()
        assert sorted(r["id"] for r in rows) == sorted(accepted.values())  # each once: none lost, none doubled
    finally:
        restarted.stop()
    attempts = _attempts(state)
    assert sorted(attempts.values())[-1] == 2 and sum(attempts.values()) <= len(accepted) + 1, attempts


def _attempts(state: Path) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(state / "grader.sqlite3") as db:
        return dict(db.execute("SELECT public_id, attempts FROM submissions"))
