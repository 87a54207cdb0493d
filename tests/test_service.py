"""grader serve, started as a user starts it (a process on a loopback port), used as students and staff
use it: the API, `grader submit --to`, the pages' forms; and killed outright mid-queue."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import nbformat
import pytest

from conftest import REPO, SOLUTIONS, TEMPLATES, data_root, load
from postgres import PostgresServer, binaries

GRADER = [sys.executable, "-m", "grader"]
SOLUTION = SOLUTIONS / "gradient_descent.ipynb"
TEMPLATE = TEMPLATES / "gradient_descent.ipynb"


class Service:
    """A `grader serve` process on a free loopback port, its state in `state`, its database `database`
    (None: SQLite in the state directory)."""

    def __init__(self, state: Path, *extra: str, database: str | None = None):
        self.database = database or f"sqlite:///{state / 'grader.sqlite3'}"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen(
            [*GRADER, "serve", "--state", str(state), "--port", str(self.port), "--course", str(REPO),
             "--data-root", str(data_root()), "--device", "cpu", "--database", self.database, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.lines: list[str] = []
        self.errors: list[str] = []  # its log: read as it comes, so that a full pipe never blocks it
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()
        threading.Thread(target=lambda: self.errors.extend(self.process.stderr), daemon=True).start()
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
                time.sleep(0.5)  # its last words reach self.errors
                raise AssertionError(f"grader serve exited: {''.join(self.errors)[-3000:]}")
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


@pytest.fixture(scope="module")
def postgres():
    """One real PostgreSQL server for this module's tests (not beyond: it runs as the sandbox's user)."""
    if binaries() is None:
        pytest.skip("PostgreSQL is not installed here (apt-get install postgresql); .ci/run installs it")
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request) -> str | None:
    """The same test on each database the service supports: None (SQLite, the default) or a new
    PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres").create_database(f"grader_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def service(tmp_path, database):
    running = Service(tmp_path / "state", database=database)
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


def test_bad_uploads_are_refused_with_a_message_naming_the_file(tmp_path, database):
    service = Service(tmp_path / "state", "--per-minute", "2", "--max-upload-mb", "1", database=database)
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
        # the API's changes, with the login cookie alone: refused without the page's token
        assert browser.post("api/submissions", files=upload).status_code == 403
        assert browser.post("api/submissions", files=upload, headers={"X-CSRF-Token": csrf}).status_code == 202


def test_a_server_killed_mid_queue_grades_every_accepted_submission_once(tmp_path, database):
    state = tmp_path / "state"
    service = Service(state, database=database)
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

    restarted = Service(state, database=database)
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
    attempts = _attempts(service.database)
    assert sorted(attempts.values())[-1] == 2 and sum(attempts.values()) <= len(accepted) + 1, attempts


def _submissions(database: str) -> dict:
    """public id -> its row, read from the database itself."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from grader.service.db import Submission

    engine = create_engine(database)
    try:
        with Session(engine) as session:
            return {row.public_id: row for row in session.scalars(select(Submission))}
    finally:
        engine.dispose()


def _attempts(database: str) -> dict[str, int]:
    """How many times each submission's grading was started."""
    return {public_id: row.attempts for public_id, row in _submissions(database).items()}


def test_a_notebook_submits_itself_with_the_in_notebook_api(service, tmp_path, monkeypatch, capsys):
    from grader.student import submit as submit_from_notebook

    token = roster(service, "id,name\ns1,Sam\n")["s1"]
    folder = tmp_path / "work"
    folder.mkdir()
    notebook = folder / "my copy.ipynb"  # a renamed copy: the bundle beside it names the assignment
    notebook.write_bytes(SOLUTION.read_bytes())
    (folder / "gradient_descent.checks.json").write_bytes((TEMPLATES / "gradient_descent.checks.json").read_bytes())
    assert submit_from_notebook(to=service.url, token=token) is None  # no notebook named by the kernel: said
    assert "pass submit(notebook=" in capsys.readouterr().out
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))  # what Jupyter sets in the kernel it starts
    outcome = submit_from_notebook(to=service.url, token=token)
    printed = capsys.readouterr().out
    assert outcome is not None and outcome.score == 14, printed
    assert "submitting my copy.ipynb as last saved" in printed and "score: 14 / 14" in printed
    with service.client(token) as sam:
        (record,) = sam.get("api/submissions").json()
    assert record["assignment"] == "gradient-descent" and record["filename"] == "my copy.ipynb"


def test_staff_run_the_course_deadline_policy_summary_regrade_and_exports(service):
    tokens = roster(service, "Student,ID,SIS User ID\nAda Lovelace,101,ada\nBob,102,bob\n")  # a Canvas export
    with service.client(tokens["101"]) as ada, service.client(tokens["102"]) as bob, \
            service.client(service.staff_token) as staff:
        early = submit(ada, TEMPLATE).json()["id"]  # nothing implemented yet: 0 / 14
        assert wait_for(ada, early)["score"] == 0
        assert bob.put("api/staff/assignments/gradient-descent", json={"policy": "best"}).status_code == 403
        deadline = staff.put("api/staff/assignments/gradient-descent",
                             json={"deadline": "2000-01-01T00:00:00Z", "policy": "last-before-deadline"})
        assert deadline.status_code == 200, deadline.text
        assert staff.put("api/staff/assignments/gradient-descent", json={"policy": "first"}).status_code == 422
        late = submit(ada, SOLUTION).json()["id"]
        on_time = submit(bob, SOLUTION).json()["id"]
        assert wait_for(ada, late)["late"] is True and wait_for(bob, on_time)["score"] == 14

        def counted(policy: str, deadline: str | None) -> dict[str, str]:
            assert staff.put("api/staff/assignments/gradient-descent",
                             json={"policy": policy, "deadline": deadline}).status_code == 200
            export = staff.get("api/staff/assignments/gradient-descent/export", params={"format": "canvas"})
            assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
            header, *rows = csv.reader(io.StringIO(export.text))
            assert header[:6] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "gradient-descent"]
            return {row[1]: row[5] for row in rows}

        # every submission came after a deadline in 2000: none counts under last-before-deadline
        assert counted("last-before-deadline", "2000-01-01T00:00:00Z") == {}
        assert counted("last-before-deadline", None) == {"101": "14", "102": "14"}  # no deadline: the last
        assert counted("best", None) == {"101": "14", "102": "14"}
        summary = staff.get("api/staff/assignments/gradient-descent/summary")
        assert summary.status_code == 200 and "Ada Lovelace" in summary.text and "Bob" in summary.text
        assert bob.get("api/staff/assignments/gradient-descent/summary").status_code == 403
        junit = staff.get("api/staff/assignments/gradient-descent/export", params={"format": "junit"})
        assert junit.status_code == 200 and "<testsuite" in junit.text
        assert "101" in staff.get("api/staff/assignments/gradient-descent/export").text  # csv by default

        # one student's history, then a regrade of one submission and of the whole assignment
        assert [s["id"] for s in staff.get("api/submissions", params={"student": "101"}).json()] == [late, early]
        assert staff.post(f"api/staff/submissions/{early}/regrade").status_code == 202
        assert wait_for(ada, early)["score"] == 0
        assert staff.post("api/staff/assignments/gradient-descent/regrade").json() == {"requeued": 3}
        assert [wait_for(staff, i)["score"] for i in (early, late, on_time)] == [0, 14, 14]
        assert bob.post(f"api/staff/submissions/{early}/regrade").status_code == 403
        staff_page = staff.get(f"submissions/{on_time}/feedback").text
        assert staff_page != bob.get(f"submissions/{on_time}/feedback").text  # staff see hidden checks in full

        # a lost token replaced (the old one stops working), and a second staff account
        renewed = staff.post("api/staff/students/102/token").json()["token"]
        assert bob.get("api/me").status_code == 401
        with service.client(renewed) as bob_again:
            assert bob_again.get("api/me").json() == {"role": "student", "name": "Bob"}
            assert bob_again.post("api/staff/staff", json={"name": "me"}).status_code == 403
        ta = staff.post("api/staff/staff", json={"name": "TA"}).json()["token"]
        assert staff.post("api/staff/staff", json={"name": "TA"}).status_code == 409
        with service.client(ta) as second:
            assert second.get("api/me").json() == {"role": "staff", "name": "TA"}


def test_a_student_and_the_staff_in_a_browser(service, chrome, tmp_path):
    """The staff's flow (roster, then summary, regrade, export) around a student's (upload, queued,
    graded, feedback), each in the browser as its user sees it."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    def visible_text(driver, selector: str) -> str:
        """What the page shows in `selector`, read in one round trip; "" while the page is being
        replaced (a redirect, a reload). Finding the element and then asking for its text is two
        round trips, and a page replaced between them fails the second with whatever Chrome says
        that time (a stale element, or "Node with given id does not belong to the document")."""
        try:
            return driver.execute_script(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector)
        except WebDriverException:
            return ""

    def page_text():
        return visible_text(chrome, "body")

    def history(driver) -> str:
        return visible_text(driver, "#history")

    def no_errors_in_the_console():
        assert [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"] == []  # CSP included

    chrome.get(f"{service.url}login#{service.staff_token}")  # a personal link: the page signs in by itself
    WebDriverWait(chrome, 30).until(lambda d: d.find_elements(By.ID, "roster"))
    class_list = tmp_path / "class.csv"
    class_list.write_text("id,name\ns1,Sam Student\n")
    chrome.find_element(By.ID, "roster-file").send_keys(str(class_list))
    chrome.find_element(By.CSS_SELECTOR, "#roster button").click()
    WebDriverWait(chrome, 30).until(lambda d: d.find_elements(By.ID, "tokens"))
    link = visible_text(chrome, "#tokens code")
    assert link.startswith(f"{service.url}login#")
    no_errors_in_the_console()

    chrome.delete_all_cookies()
    chrome.get(link)
    WebDriverWait(chrome, 30).until(lambda d: d.find_elements(By.ID, "upload"))
    assert "#" not in chrome.current_url and link.split("#")[1] not in chrome.page_source
    Select(chrome.find_element(By.ID, "assignment")).select_by_value("gradient-descent")
    chrome.find_element(By.ID, "notebook").send_keys(str(SOLUTION))
    chrome.find_element(By.CSS_SELECTOR, "#upload button").click()
    WebDriverWait(chrome, 30).until(lambda d: "gradient_descent.ipynb" in history(d))
    chrome.execute_script("window.notReloaded = true")
    # queued, then graded: the list updates itself, without a reload
    WebDriverWait(chrome, 300).until(lambda d: d.find_elements(By.LINK_TEXT, "feedback"))
    assert chrome.execute_script("return window.notReloaded") is True
    assert "14 / 14" in history(chrome)
    chrome.find_element(By.LINK_TEXT, "feedback").click()
    WebDriverWait(chrome, 30).until(lambda d: "/feedback" in d.current_url)
    assert "14" in page_text()
    no_errors_in_the_console()

    chrome.delete_all_cookies()
    chrome.get(f"{service.url}login#{service.staff_token}")
    WebDriverWait(chrome, 30).until(lambda d: d.find_elements(By.ID, "assignments"))
    chrome.find_element(By.CSS_SELECTOR, 'a[href="/api/staff/assignments/gradient-descent/summary"]').click()
    WebDriverWait(chrome, 30).until(lambda d: "Sam Student" in page_text())
    chrome.back()
    WebDriverWait(chrome, 30).until(lambda d: d.find_elements(By.ID, "regrade-gradient-descent"))
    chrome.find_element(By.ID, "regrade-gradient-descent").click()
    WebDriverWait(chrome, 30).until(lambda d: "queued" in history(d) or "grading" in history(d))
    WebDriverWait(chrome, 300).until(lambda d: "graded" in history(d) and "queued" not in history(d)
                                     and "grading" not in history(d))
    export = chrome.execute_async_script(
        "const done = arguments[0];"
        "fetch('/api/staff/assignments/gradient-descent/export?format=csv').then(r => r.text()).then(done);")
    header, row = csv.reader(io.StringIO(export))
    assert row[:2] == ["s1", "Sam Student"] and dict(zip(header, row, strict=True))["gradient-descent"] == "14"
    no_errors_in_the_console()


def slow_solution(tmp_path: Path, seconds: int) -> Path:
    """The reference solution with a first cell that sleeps: a grade that is in flight long enough."""
    notebook = load(SOLUTION)
    notebook.cells.insert(1, nbformat.v4.new_code_cell(f"import time\ntime.sleep({seconds})"))
    nbformat.write(notebook, tmp_path / SOLUTION.name)
    return tmp_path / SOLUTION.name


def submit_and_wait_until_grading(client: httpx.Client, notebook: Path) -> str:
    submission = submit(client, notebook).json()["id"]
    deadline = time.monotonic() + 120
    while client.get(f"api/submissions/{submission}").json()["status"] != "grading":
        assert time.monotonic() < deadline, "it was not taken from the queue"
        time.sleep(0.2)
    return submission


def test_a_service_stopped_mid_grade_hands_the_submission_back_uncounted(tmp_path):
    slow = slow_solution(tmp_path, 25)
    state = tmp_path / "state"
    service = Service(state)
    token = roster(service, "id,name\ns1,Sam\n")["s1"]
    with service.client(token) as sam:
        submission = submit_and_wait_until_grading(sam, slow)
    stopping = time.monotonic()
    service.stop()  # Ctrl-C
    assert service.process.returncode == 0 and time.monotonic() - stopping < 45
    assert _attempts(service.database) == {submission: 0}  # back in the queue, this start not counted

    restarted = Service(state)
    try:
        with restarted.client(token) as sam:
            assert wait_for(sam, submission)["score"] == 14
    finally:
        restarted.stop()
    assert _attempts(service.database) == {submission: 1}


def test_a_grading_process_that_dies_costs_its_submission_one_retry(tmp_path):
    slow = slow_solution(tmp_path, 8)
    service = Service(tmp_path / "state")
    try:
        token = roster(service, "id,name\ns1,Sam\n")["s1"]
        with service.client(token) as sam:
            submission = submit_and_wait_until_grading(sam, slow)
            time.sleep(1)
            workers = _grading_processes(service.process.pid)
            assert len(workers) == 1, workers  # -j 1: one grading process
            os.kill(workers[0], signal.SIGKILL)  # out of memory, say
            assert wait_for(sam, submission)["score"] == 14
        assert _grading_processes(service.process.pid) not in ([], workers)  # a new process took over
    finally:
        service.stop()
    assert _attempts(service.database) == {submission: 2}


def _grading_processes(parent: int) -> list[int]:
    """The server's spawned grading processes (not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if f"\nPPid:\t{parent}\n" in status and "spawn_main" in command:
            found.append(int(entry.name))
    return found


def test_bad_input_to_the_commands_gets_one_clear_line(tmp_path):
    def grader(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*GRADER, *argv], capture_output=True, text=True, timeout=120)

    (tmp_path / "empty" / "solutions").mkdir(parents=True)
    done = grader("serve", "--course", str(tmp_path / "empty"), "--state", str(tmp_path / "s1"))
    assert done.returncode == 2 and "no assignments in" in done.stderr, done.stderr
    done = grader("serve", "--course", str(REPO), "--database", "not a url", "--state", str(tmp_path / "s2"))
    assert done.returncode == 2 and "is not a database URL" in done.stderr, done.stderr
    done = grader("serve", "--course", str(REPO), "--state", str(tmp_path / "s3"),
                  "--database", f"postgresql+psycopg://nobody@/grader?host={tmp_path}")  # no server there
    assert done.returncode == 3 and "cannot use the database" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]  # nothing listens once the probe is closed
    for to, said in ((f"http://127.0.0.1:{closed}/", "cannot reach the grading service"),
                     ("grader.example.edu", "starting with https://")):
        done = grader("submit", str(SOLUTION), "--to", to, "--token", "t")
        assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
    done = grader("submit", str(tmp_path / "missing.ipynb"), "--to", "http://127.0.0.1:1/", "--token", "t")
    assert done.returncode == 2 and "no such file" in done.stderr


# --------------------------------------------------------------------------
# Several servers on one database; grading on a Dask cluster


def _holder(services: list[Service], server_id: str) -> Service:
    """Which service process holds the lock named `server_id` (servers.py)."""
    for service in services:
        for descriptor in Path(f"/proc/{service.process.pid}/fd").iterdir():
            try:
                if os.readlink(descriptor).endswith(f"/{server_id}.lock"):
                    return service
            except OSError:
                continue
    raise AssertionError(f"no service holds the lock of {server_id}")


def test_two_servers_share_a_database_and_one_grades_what_the_other_left_when_killed(tmp_path, postgres):
    database = postgres.create_database(f"grader_{uuid.uuid4().hex[:12]}")
    slow = slow_solution(tmp_path, 10)
    state = tmp_path / "state"
    first = Service(state, database=database)
    second = Service(state, database=database)
    survivor = None
    try:
        assert second.staff_token is None  # the first made the staff account; the second shares it
        tokens = roster(first, "id,name\ns1,Sam\ns2,Kim\n")
        with first.client(tokens["s1"]) as sam:
            held = submit_and_wait_until_grading(sam, slow)
        with second.client(tokens["s2"]) as kim:
            other = submit(kim, SOLUTION).json()["id"]
        server = _submissions(database)[held].claimed_by
        victim = _holder([first, second], server)
        survivor = second if victim is first else first
        victim.kill()  # no restart: the other server learns of its death from its free lock
        for token, submission in ((tokens["s1"], held), (tokens["s2"], other)):
            with survivor.client(token) as student:
                assert wait_for(student, submission, timeout_s=180)["score"] == 14
        rows = _submissions(database)
        assert (rows[held].attempts, rows[other].attempts) == (2, 1)  # the killed grade cost one attempt
        assert rows[held].claimed_by != server  # graded by the survivor
        assert sorted(p.stem for p in (state / "servers").glob("*.lock")) == [rows[held].claimed_by]
    finally:
        first.stop()
        second.stop()


def test_a_claim_whose_lease_lapsed_goes_back_to_the_queue_and_its_late_result_is_dropped(tmp_path):
    """A server on another machine that stopped renewing (dead, or cut off): its claims lapse; if it comes
    back and finishes, the grade it stores is refused, so the submission is still graded once."""
    import datetime as dt

    from sqlalchemy import update

    from grader.service import queue
    from grader.service.db import Student, Submission, engine_for, migrate, session_factory

    engine = engine_for(f"sqlite:///{tmp_path / 'q.sqlite3'}")
    migrate(engine)
    sessions = session_factory(engine)
    with sessions() as session:
        session.add(Student(key="s1", name="Sam", token_hash="0" * 64))
        session.commit()
        queue.enqueue(session, student_id=1, assignment="gradient-descent", filename="n.ipynb", sha256="0" * 64,
                      size=1)
    away = queue.claim(sessions, "away")
    assert away is not None and queue.claim(sessions, "here") is None
    queue.renew(sessions, "away")
    assert queue.recover(sessions, dead=[]) == (0, 0)  # alive: left alone
    with sessions() as session:
        session.execute(update(Submission).values(lease_expires=queue.now() - dt.timedelta(seconds=1)))
        session.commit()
    assert queue.recover(sessions, dead=[]) == (1, 0)
    here = queue.claim(sessions, "here")
    assert here is not None and here.attempts == 2
    late = dict(score=0.0, max_score=14.0, result_status="graded", message="", result_json="{}", feedback_html="")
    queue.finish(sessions, away, **late)  # the lapsed claim: refused
    queue.give_back(sessions, away, "too late")  # likewise
    with sessions() as session:
        row = session.get_one(Submission, here.id)
        assert (row.status, row.claimed_by, row.score) == (queue.GRADING, "here", None)
    queue.finish(sessions, here, **{**late, "score": 14.0})
    with sessions() as session:
        assert session.get_one(Submission, here.id).score == 14.0
    engine.dispose()


def test_a_service_grades_on_a_dask_cluster_and_a_killed_worker_loses_nothing(tmp_path):
    pytest.importorskip("distributed")
    from loopback_cluster import LoopbackCluster

    cluster = LoopbackCluster(tmp_path / "cluster")
    (tmp_path / "cluster").mkdir()
    service = None
    try:
        cluster.start()
        service = Service(tmp_path / "state", "--scheduler", cluster.address)
        assert any("2 grading thread(s) on the Dask cluster" in line for line in service.lines), service.lines
        tokens = roster(service, "id,name\ns1,Sam\ns2,Kim\n")
        with service.client(tokens["s1"]) as sam:
            held = submit_and_wait_until_grading(sam, slow_solution(tmp_path, 8))
        with service.client(tokens["s2"]) as kim:
            other = submit(kim, SOLUTION).json()["id"]
        cluster.kill_worker_running(held, spared=set())  # its nanny starts a new worker; the task moves
        for token, submission in ((tokens["s1"], held), (tokens["s2"], other)):
            with service.client(token) as student:
                assert wait_for(student, submission, timeout_s=240)["score"] == 14
        rows = _submissions(service.database)
        workers = {json.loads(rows[s].result_json)["environment"]["worker"] for s in (held, other)}
        assert workers <= {"w1", "w2"}, workers  # graded on the cluster's workers, not by the server
    finally:
        if service is not None:
            service.stop()
        cluster.close()

