"""The ASGI application: the student's page, the login page, the feedback pages and the JSON API (its
OpenAPI schema at /openapi.json). Every route but the login page and /api/health needs a caller; a
student reaches only their own submissions (anyone else's is "not found", whatever its id)."""


import csv
import io
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from grader.course.assignment import Assignment, assignment_ids, find_assignment
from grader.errors import NotebookError
from grader.intake.notebooks import read_submission
from grader.reports.html import template
from grader.service import auth, queue
from grader.service.auth import Caller
from grader.service.db import Student, Submission, now
from grader.service.storage import UploadStore

SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'"}


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
        if request.method == "POST" and request.url.path in ("/api/submissions", "/submit", "/api/staff/roster"):
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
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(auth.COOKIE)
        found = auth.caller_of(session, token)
        if found is None:
            raise HTTPException(401, "sign in with your token (the link or token your course staff gave you)",
                                headers={"WWW-Authenticate": "Bearer"})
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
    def history(session: Db, who: Who, assignment: str | None = None) -> list[dict[str, Any]]:
        query = select(Submission).order_by(Submission.id.desc())
        if who.role == auth.STUDENT:
            query = query.where(Submission.student_id == who.id)
        if assignment:
            query = query.where(Submission.assignment == assignment)
        return [_summary(session, row) for row in session.scalars(query.limit(500))]

    @app.get("/api/submissions/{public_id}")
    def one(session: Db, who: Who, public_id: str) -> dict[str, Any]:
        return _summary(session, own_submission(session, who, public_id))

    @app.get("/submissions/{public_id}/feedback", response_class=HTMLResponse)
    def feedback(session: Db, who: Who, public_id: str) -> HTMLResponse:
        row = own_submission(session, who, public_id)
        if row.feedback_html is None:
            raise HTTPException(409, f"not graded yet ({row.status})")
        return HTMLResponse(row.feedback_html)

    @app.post("/api/staff/roster")
    async def roster(session: Db, who: Staff, roster: Annotated[UploadFile, File()]) -> dict[str, Any]:
        text = (await roster.read()).decode("utf-8-sig", errors="replace")
        added, kept = [], 0
        for key, name in roster_rows(text):
            if session.scalar(select(Student.id).where(Student.key == key)) is not None:
                kept += 1
                continue
            token = auth.new_token()
            session.add(Student(key=key, name=name, token_hash=auth.token_hash(token)))
            added.append({"key": key, "name": name, "token": token})
        session.commit()
        return {"added": added, "already_there": kept}

    # -- the pages ------------------------------------------------------------

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
        return HTMLResponse(template("service_home.html.j2").render(
            who=who, assignments=assignments.all(), submissions=rows,
            csrf=auth.csrf_token(settings.secret, who)))

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
    """The course's assignments, loaded once each."""

    def __init__(self, course_root: Path):
        self.course_root = course_root
        self._loaded: dict[str, Assignment] = {}

    def get(self, assignment_id: str) -> Assignment:
        if assignment_id not in self._loaded:
            self._loaded[assignment_id] = find_assignment(self.course_root, assignment_id)
        return self._loaded[assignment_id]

    def all(self) -> list[Assignment]:
        return [self.get(i) for i in assignment_ids(self.course_root)]

    def pick(self, assignment_id: str | None, file_name: str) -> Assignment:
        ids = assignment_ids(self.course_root)
        if assignment_id in ids:
            return self.get(assignment_id)
        by_file = [a for a in self.all() if a.notebook == file_name]
        if assignment_id is None and len(by_file) == 1:
            return by_file[0]
        raise HTTPException(400, f"{file_name}: say which assignment this is for (one of {', '.join(ids)})")


def _summary(session: Session, row: Submission) -> dict[str, Any]:
    return {"id": row.public_id, "assignment": row.assignment, "filename": row.filename, "status": row.status,
            "received_at": row.received_at.isoformat() + "Z", "score": row.score, "max_score": row.max_score,
            "message": row.message, "queue_position": queue.position(session, row),
            "feedback": f"/submissions/{row.public_id}/feedback" if row.feedback_html is not None else None}


ROSTER_KEYS = ("id", "ID", "ID number", "SIS User ID", "Email address", "email", "Email")


def roster_rows(text: str) -> list[tuple[str, str]]:
    """(key, name) per student of a roster CSV: ours (id,name), a Canvas gradebook export (Student, ID)
    or a Moodle participants export (First name, Last name, ID number or Email address)."""
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        name = (record.get("name") or record.get("Student")
                or " ".join(filter(None, (record.get("First name"), record.get("Last name"))))).strip()
        key = next((record[k].strip() for k in ROSTER_KEYS if (record.get(k) or "").strip()), "")
        if key and name and "Points Possible" not in name:  # Canvas's second row is not a student
            rows.append((key, name))
    return rows
