"""The ASGI application: the student's page, the login page, the feedback pages and the JSON API (its
OpenAPI schema at /openapi.json). Every route but the login page and /api/health needs a caller; a
student reaches only their own submissions (anyone else's is "not found", whatever its id)."""


import csv
import dataclasses
import io
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from grader.course.assignment import Assignment, assignment_ids, find_assignment
from grader.errors import NotebookError
from grader.intake.notebooks import read_submission
from grader.reports.exports import FORMATS
from grader.reports.html import SummaryEntry, render_class_summary, render_feedback, template
from grader.results import GradeResult
from grader.service import auth, queue
from grader.service.auth import Caller
from grader.service.db import AssignmentSettings, Student, Submission, now
from grader.service.db import Staff as StaffRow
from grader.service.grades import POLICIES, class_grades, gradebook, is_late, settings_of
from grader.service.storage import UploadStore

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"}


UPLOAD_ROUTES = ("/api/submissions", "/submit", "/api/staff/roster", "/staff/roster")  # refused before reading


@dataclass(frozen=True)
class ServiceSettings:
    course_root: Path
    max_upload_mb: int = 5
    submissions_per_minute: int = 6  # per student
    secret: bytes = b""  # keys the CSRF tokens: the state directory's, kept across restarts


def create_app(sessions: sessionmaker, store: UploadStore, settings: ServiceSettings,
               on_queued=lambda: None) -> FastAPI:
    app = FastAPI(title="grader", summary="Submit notebooks and read their feedback", docs_url=None,
                  redoc_url=None)  # the interactive docs load scripts from a CDN: the schema stays
    assignments = _Assignments(settings.course_root)

    @app.middleware("http")
    async def headers_and_size(request: Request, call_next):
        if request.method == "POST" and request.url.path in UPLOAD_ROUTES:
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"detail": "an upload must say its size (Content-Length)"}, status_code=411)
            if int(length) > settings.max_upload_mb * 1024 * 1024 + 64 * 1024:
                return JSONResponse({"detail": f"an upload may be at most {settings.max_upload_mb} MB"},
                                    status_code=413)
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    def db():
        with sessions() as session:
            yield session

    Db = Annotated[Session, Depends(db)]

    def caller(request: Request, session: Db) -> Caller:
        header = request.headers.get("authorization", "")
        bearer = header.lower().startswith("bearer ")
        found = auth.caller_of(session, header[7:].strip() if bearer else request.cookies.get(auth.COOKIE))
        session.rollback()  # read only: its connection goes back to the pool while the upload is read
        if found is None:
            raise HTTPException(401, "sign in with your token (the link or token your course staff gave you)",
                                headers={"WWW-Authenticate": "Bearer"})
        # a browser's cookie rides along with any request a page makes: a change needs the page's CSRF
        # token too (a page form's field, checked by its route, or this header for the API)
        if not bearer and request.method not in ("GET", "HEAD") and request.url.path.startswith("/api/") and \
                not auth.csrf_ok(settings.secret, found, request.headers.get("x-csrf-token")):
            raise HTTPException(403, "a change from a page needs its CSRF token: reload the page and try again")
        return found

    Who = Annotated[Caller, Depends(caller)]

    def staff(who: Who) -> Caller:
        if who.role != auth.STAFF:
            raise HTTPException(403, "only course staff may do this")
        return who

    Staff = Annotated[Caller, Depends(staff)]

    def own_submission(session: Session, who: Caller, public_id: str) -> Submission:
        row = session.scalar(select(Submission).where(Submission.public_id == public_id))
        if row is None or (who.role == auth.STUDENT and row.student_id != who.id):
            raise HTTPException(404, "no such submission")  # someone else's looks the same as none
        return row

    # -- the API --------------------------------------------------------------

    @app.get("/api/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/me")
    def me(who: Who) -> dict[str, str]:
        return {"role": who.role, "name": who.name}

    @app.get("/api/assignments")
    def list_assignments(who: Who) -> list[dict[str, Any]]:
        return [{"id": a.id, "title": a.title, "notebook": a.notebook} for a in assignments.all()]

    @app.post("/api/submissions", status_code=202)
    async def submit(session: Db, who: Who, notebook: Annotated[UploadFile, File()],
                     assignment: Annotated[str | None, Form()] = None) -> dict[str, Any]:
        row = await _accept(session, who, notebook, assignment)
        on_queued()
        return _summary(session, row)

    @app.get("/api/submissions")
    def history(session: Db, who: Who, assignment: str | None = None,
                student: str | None = None) -> list[dict[str, Any]]:
        """A student's own submissions; staff: everyone's, or one student's (their roster key)."""
        query = select(Submission).order_by(Submission.id.desc())
        if who.role == auth.STUDENT:
            query = query.where(Submission.student_id == who.id)
        elif student is not None:
            query = query.join(Student).where(Student.key == student)
        if assignment:
            query = query.where(Submission.assignment == assignment)
        return [_summary(session, row) for row in session.scalars(query.limit(500))]

    @app.get("/api/submissions/{public_id}")
    def one(session: Db, who: Who, public_id: str) -> dict[str, Any]:
        return _summary(session, own_submission(session, who, public_id))

    @app.get("/submissions/{public_id}/feedback", response_class=HTMLResponse)
    def feedback(session: Db, who: Who, public_id: str) -> HTMLResponse:
        row = own_submission(session, who, public_id)
        if row.feedback_html is None or row.result_json is None:
            raise HTTPException(409, f"not graded yet ({row.status})")
        if who.role == auth.STAFF:  # hidden checks' details too, from the record
            return HTMLResponse(render_feedback(GradeResult.from_json(row.result_json), audience="staff"))
        return HTMLResponse(row.feedback_html)

    @app.post("/api/staff/roster")
    async def roster(session: Db, who: Staff, roster: Annotated[UploadFile, File()]) -> dict[str, Any]:
        """The class list (CSV): each new student's token, shown once."""
        return add_students(session, (await roster.read()).decode("utf-8-sig", errors="replace"))

    @app.post("/api/staff/students/{key}/token")
    def new_student_token(session: Db, who: Staff, key: str) -> dict[str, str]:
        """A new token for a student who lost theirs; the old one stops working."""
        student = session.scalar(select(Student).where(Student.key == key))
        if student is None:
            raise HTTPException(404, f"no student {key!r} on the roster")
        token = auth.new_token()
        student.token_hash = auth.token_hash(token)
        session.commit()
        return {"key": key, "name": student.name, "token": token}

    @app.post("/api/staff/staff")
    def add_staff(session: Db, who: Staff, member: StaffMember) -> dict[str, str]:
        """Another staff account; its token, shown once."""
        token = auth.new_token()
        session.add(StaffRow(name=member.name, token_hash=auth.token_hash(token)))
        try:
            session.commit()
        except IntegrityError:
            raise HTTPException(409, f"there is a staff account named {member.name!r} already") from None
        return {"name": member.name, "token": token}

    @app.put("/api/staff/assignments/{assignment_id}")
    def set_assignment(session: Db, who: Staff, assignment_id: str, change: SettingsChange) -> dict[str, Any]:
        """An assignment's deadline (UTC; none: no deadline) and which submission's grade counts."""
        assignments.get_or_404(assignment_id)
        return change_settings(session, assignment_id, change)

    @app.get("/api/staff/assignments/{assignment_id}/summary", response_class=HTMLResponse)
    def class_summary(session: Db, who: Staff, assignment_id: str) -> HTMLResponse:
        """The class summary page `grader batch` writes, from the counted grades in the database."""
        assignment = assignments.get_or_404(assignment_id)
        entries = [SummaryEntry(result=dataclasses.replace(GradeResult.from_json(row.result_json or "{}"),
                                                           submission=student.name),
                                feedback_href=f"/submissions/{row.public_id}/feedback", label=student.key)
                   for student, row in class_grades(session, assignment_id)]
        return HTMLResponse(render_class_summary(entries, title=f"{assignment.title} ({assignment.id})"))

    @app.get("/api/staff/assignments/{assignment_id}/export")
    def export(session: Db, who: Staff, assignment_id: str, format: str = "csv") -> Response:
        """The counted grades in an export format (csv, canvas, moodle, junit); warnings in a header."""
        assignments.get_or_404(assignment_id)
        if format not in FORMATS:
            raise HTTPException(422, f"format must be one of {', '.join(FORMATS)}")
        made = FORMATS[format].render(gradebook(session, assignment_id), checks=False)
        media = "application/xml" if format == "junit" else "text/csv"
        warnings = " | ".join(made.warnings).encode("ascii", "replace").decode()[:4000]
        return Response(made.text, media_type=media, headers={"X-Grader-Warnings": warnings} if warnings else {})

    @app.post("/api/staff/submissions/{public_id}/regrade", status_code=202)
    def regrade_one(session: Db, who: Staff, public_id: str) -> dict[str, Any]:
        row = own_submission(session, who, public_id)
        queue.regrade(session, [row])
        on_queued()
        return _summary(session, row)

    @app.post("/api/staff/assignments/{assignment_id}/regrade", status_code=202)
    def regrade_all(session: Db, who: Staff, assignment_id: str) -> dict[str, int]:
        """Every submission of the assignment graded again (after a fix to its spec)."""
        assignments.get_or_404(assignment_id)
        rows = list(session.scalars(select(Submission).where(Submission.assignment == assignment_id)))
        requeued = queue.regrade(session, rows)
        on_queued()
        return {"requeued": requeued}

    # -- the staff's forms (the API's changes, from the page, with its CSRF token) ----------

    def checked_form(who: Caller, csrf: str) -> None:
        if not auth.csrf_ok(settings.secret, who, csrf):
            raise HTTPException(403, "this form is out of date: reload the page and try again")

    @app.post("/staff/roster", response_class=HTMLResponse)
    async def roster_form(request: Request, session: Db, who: Staff, roster: Annotated[UploadFile, File()],
                          csrf: Annotated[str, Form()]) -> HTMLResponse:
        checked_form(who, csrf)
        added = add_students(session, (await roster.read()).decode("utf-8-sig", errors="replace"))
        return HTMLResponse(template("service_tokens.html.j2").render(
            added=added["added"], kept=added["already_there"], base=str(request.base_url)))

    @app.post("/staff/assignments/{assignment_id}")
    def settings_form(session: Db, who: Staff, assignment_id: str, csrf: Annotated[str, Form()],
                      policy: Annotated[str, Form()], deadline: Annotated[str, Form()] = "") -> RedirectResponse:
        checked_form(who, csrf)
        assignments.get_or_404(assignment_id)
        try:
            change = SettingsChange.model_validate({"policy": policy, "deadline": deadline or None})
        except ValidationError:
            raise HTTPException(422, f"{deadline!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)") from None
        change_settings(session, assignment_id, change)
        return RedirectResponse("/", status_code=303)

    @app.post("/staff/assignments/{assignment_id}/regrade")
    def regrade_form(session: Db, who: Staff, assignment_id: str, csrf: Annotated[str, Form()]) -> RedirectResponse:
        checked_form(who, csrf)
        regrade_all(session, who, assignment_id)
        return RedirectResponse("/", status_code=303)

    # -- the pages ------------------------------------------------------------

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # none: and a browser asks on every page

    @app.get("/service.js", include_in_schema=False)
    def script() -> Response:
        return Response(template("service.js.j2").render(), media_type="text/javascript")

    @app.get("/login", response_class=HTMLResponse)
    def login_page() -> HTMLResponse:
        return HTMLResponse(template("service_login.html.j2").render())

    @app.post("/login")
    def login(session: Db, token: Annotated[str, Form()]) -> RedirectResponse:
        if auth.caller_of(session, token.strip()) is None:
            raise HTTPException(401, "that token is not one this course gave out")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(auth.COOKIE, token.strip(), httponly=True, samesite="strict", max_age=180 * 86400)
        return response

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request, session: Db) -> Any:
        who = auth.caller_of(session, request.cookies.get(auth.COOKIE))
        if who is None:
            return RedirectResponse("/login", status_code=303)
        rows = history(session, who)
        everything = assignments.all()
        return HTMLResponse(template("service_home.html.j2").render(
            who=who, assignments=everything, submissions=rows, csrf=auth.csrf_token(settings.secret, who),
            policies=POLICIES, settings={a.id: _settings_view(session, a.id) for a in everything}))

    @app.post("/submit")
    async def submit_form(session: Db, who: Who, notebook: Annotated[UploadFile, File()],
                          csrf: Annotated[str, Form()], assignment: Annotated[str | None, Form()] = None):
        if not auth.csrf_ok(settings.secret, who, csrf):
            raise HTTPException(403, "this form is out of date: reload the page and submit again")
        await _accept(session, who, notebook, assignment)
        on_queued()
        return RedirectResponse("/", status_code=303)

    async def _accept(session: Session, who: Caller, upload: UploadFile, assignment_id: str | None) -> Submission:
        if who.role != auth.STUDENT:
            raise HTTPException(403, "staff do not submit: sign in with a student's token to try the flow")
        name = Path(upload.filename or "notebook.ipynb").name
        content = await upload.read(settings.max_upload_mb * 1024 * 1024 + 1)
        if len(content) > settings.max_upload_mb * 1024 * 1024:
            raise HTTPException(413, f"{name}: an upload may be at most {settings.max_upload_mb} MB")
        if not name.endswith(".ipynb"):
            raise HTTPException(400, f"{name}: upload your notebook (a .ipynb file)")
        # in the event loop, not a worker thread: the request already holds a database connection, and
        # requests queued for threads while holding connections can exhaust the pool (tried: they did)
        hint = _checked_notebook(name, content)
        assignment = assignments.pick(assignment_id or hint, name)
        recent = session.scalar(select(func.count()).select_from(Submission).where(
            Submission.student_id == who.id, Submission.received_at > now() - timedelta(minutes=1))) or 0
        if recent >= settings.submissions_per_minute:
            raise HTTPException(429, f"at most {settings.submissions_per_minute} submissions a minute: wait a "
                                     "little and submit again", headers={"Retry-After": "60"})
        digest = store.put(content)  # on disk before the row that points to it is committed
        try:
            return queue.enqueue(session, student_id=who.id, assignment=assignment.id, filename=name,
                                 sha256=digest, size=len(content))
        except IntegrityError:  # a student removed from the roster between the two queries
            raise HTTPException(401, "this token is no longer valid") from None

    return app


def _checked_notebook(name: str, content: bytes) -> str | None:
    """The notebook's own assignment id (its metadata), after the grader's usual intake checks."""
    with tempfile.TemporaryDirectory(prefix="grader-upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            return read_submission(path).assignment_hint
        except NotebookError as exc:
            raise HTTPException(400, exc.message) from None


class _Assignments:
    """The course's assignments, each loaded once and again when the course's specs change (reading
    them costs 16 ms: not once per upload)."""

    def __init__(self, course_root: Path):
        self.course_root = course_root
        self._specs: tuple = ()
        self._ids: list[str] = []
        self._loaded: dict[str, Assignment] = {}
        self._lock = threading.Lock()  # requests run in several threads

    def ids(self) -> list[str]:
        specs = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in (self.course_root / "solutions").glob("*.py")))
        with self._lock:
            if specs != self._specs:
                self._specs, self._ids, self._loaded = specs, assignment_ids(self.course_root), {}
            return self._ids

    def get(self, assignment_id: str) -> Assignment:
        self.ids()  # forgets what a changed spec held
        with self._lock:
            if assignment_id not in self._loaded:
                self._loaded[assignment_id] = find_assignment(self.course_root, assignment_id)
            return self._loaded[assignment_id]

    def get_or_404(self, assignment_id: str) -> Assignment:
        if assignment_id not in self.ids():
            raise HTTPException(404, f"no assignment {assignment_id!r} in this course")
        return self.get(assignment_id)

    def all(self) -> list[Assignment]:
        return [self.get(i) for i in self.ids()]

    def pick(self, assignment_id: str | None, file_name: str) -> Assignment:
        ids = self.ids()
        if assignment_id in ids:
            return self.get(assignment_id)
        by_file = [a for a in self.all() if a.notebook == file_name]
        if assignment_id is None and len(by_file) == 1:
            return by_file[0]
        raise HTTPException(400, f"{file_name}: say which assignment this is for (one of {', '.join(ids)})")


class StaffMember(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class SettingsChange(BaseModel):
    deadline: datetime | None = None
    policy: str = "last"


def add_students(session: Session, text: str) -> dict[str, Any]:
    """The roster's new students, each with a new token (returned once: only its hash is kept)."""
    added, kept = [], 0
    lms, rows = roster_rows(text)
    for key, name in rows:
        if session.scalar(select(Student.id).where(Student.key == key)) is not None:
            kept += 1
            continue
        token = auth.new_token()
        session.add(Student(key=key, name=name, token_hash=auth.token_hash(token), lms=lms))
        added.append({"key": key, "name": name, "token": token})
    session.commit()
    return {"added": added, "already_there": kept}


def change_settings(session: Session, assignment_id: str, change: SettingsChange) -> dict[str, Any]:
    if change.policy not in POLICIES:
        raise HTTPException(422, f"policy must be one of {', '.join(POLICIES)}")
    deadline = change.deadline
    if deadline is not None and deadline.tzinfo is not None:
        deadline = deadline.astimezone(UTC).replace(tzinfo=None)
    row = session.get(AssignmentSettings, assignment_id) or AssignmentSettings(assignment=assignment_id)
    row.deadline, row.policy = deadline, change.policy
    session.add(row)
    session.commit()
    return {"assignment": assignment_id, "deadline": _iso(deadline), "policy": row.policy}


def _settings_view(session: Session, assignment_id: str) -> dict[str, str]:
    found = settings_of(session, assignment_id)
    return {"policy": found.policy, "deadline": found.deadline.strftime("%Y-%m-%dT%H:%M") if found.deadline else ""}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() + "Z" if moment is not None else None


def _summary(session: Session, row: Submission) -> dict[str, Any]:
    settings = settings_of(session, row.assignment)
    return {"id": row.public_id, "assignment": row.assignment, "filename": row.filename, "status": row.status,
            "received_at": _iso(row.received_at), "late": is_late(row, settings.deadline),
            "deadline": _iso(settings.deadline), "score": row.score, "max_score": row.max_score,
            "message": row.message, "queue_position": queue.position(session, row),
            "feedback": f"/submissions/{row.public_id}/feedback" if row.feedback_html is not None else None}


ROSTER_KEYS = ("id", "ID", "ID number", "SIS User ID", "Email address", "email", "Email")


def roster_rows(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The LMS a roster CSV came from ("canvas", "moodle" or "") and (key, name) per student: ours
    (id,name), a Canvas gradebook export (Student, ID) or a Moodle participants export (First name,
    Last name, ID number or Email address)."""
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or ())
    lms = "canvas" if "Student" in columns else "moodle" if "First name" in columns else ""
    rows = []
    for record in reader:
        name = (record.get("name") or record.get("Student")
                or " ".join(filter(None, (record.get("First name"), record.get("Last name"))))).strip()
        key = next((record[k].strip() for k in ROSTER_KEYS if (record.get(k) or "").strip()), "")
        if key and name and "Points Possible" not in name:  # Canvas's second row is not a student
            rows.append((key, name))
    return lms, rows
