"""grader serve (the grading service) and grader submit (a notebook to it, from a terminal)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from grader.cli.options import add_grading, grade_options
from grader.errors import GraderError, UsageError


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the grading service: students submit, see their feedback in minutes",
                           description="Start the grading service (docs/service.md): a web page and a JSON API "
                                       "where students submit notebooks and read their feedback; grading runs "
                                       "here, from a queue kept in the database. Binds 127.0.0.1 unless told "
                                       "otherwise: put it behind a TLS proxy to open it to a class.")
    serve.add_argument("--state", type=Path, default=Path("grader-service"),
                       help="where uploads, the SQLite database and the service's key live "
                            "(default: ./grader-service)")
    serve.add_argument("--database", default=None, metavar="URL",
                       help="a database URL instead of SQLite in --state, e.g. postgresql+psycopg://user@/grader")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("-j", "--jobs", type=int, default=None,
                       help="submissions graded at once (default: 1; with --scheduler, the cluster's threads)")
    serve.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                       help="grade on the workers of this Dask scheduler instead of this machine (docs/scale.md); "
                            "--device auto sends model training to workers started with --resources GPU=1")
    serve.add_argument("--max-upload-mb", type=int, default=5, help="largest notebook accepted (default: 5)")
    serve.add_argument("--per-minute", type=int, default=6,
                       help="submissions a student may make per minute (default: 6)")
    add_grading(serve)
    serve.set_defaults(run=serve_command)

    submit = sub.add_parser("submit", help="submit a notebook to a grading service and print its score",
                            description="Upload NOTEBOOK to the service at --to, wait for its grade, and print "
                                        "the score and the feedback link.")
    submit.add_argument("notebook", type=Path)
    submit.add_argument("--to", required=True, metavar="URL", help="the service, e.g. https://grader.example.edu/")
    submit.add_argument("--token", default=os.environ.get("GRADER_TOKEN"),
                        help="your token from the service's page (default: GRADER_TOKEN)")
    submit.add_argument("--assignment", default=None, help="the assignment id (default: from the notebook)")
    submit.add_argument("--no-wait", action="store_true", help="return once the notebook is accepted")
    submit.set_defaults(run=submit_command)


def serve_command(args: argparse.Namespace) -> int:
    _require_service_extra()
    from grader.service.server import ServiceConfig, serve

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.scheduler:
        from grader.grading.distributed import require_dask

        require_dask()
    if args.max_upload_mb < 1 or args.per_minute < 1:
        raise UsageError("--max-upload-mb and --per-minute must be at least 1")
    state = args.state.resolve()
    # On a cluster each worker resolves the device on its own machine (distributed.place).
    options = grade_options(args, private=(state,), device="cpu" if args.scheduler else None)
    from grader.course.assignment import assignment_ids

    if not assignment_ids(options.course_root):
        raise UsageError(f"no assignments in {options.course_root}/solutions: name the course with --course DIR")
    if args.database:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(args.database)
        except ArgumentError:
            raise UsageError(f"--database {args.database!r} is not a database URL (e.g. "
                             "postgresql+psycopg://user@host/grader)") from None
    try:
        serve(ServiceConfig(state_dir=state, options=options, database=args.database, host=args.host,
                            port=args.port, jobs=args.jobs, max_upload_mb=args.max_upload_mb,
                            submissions_per_minute=args.per_minute, scheduler=args.scheduler,
                            cluster_device=args.device,
                            cluster_data_root=args.data_root.resolve() if args.scheduler and args.data_root else None))
    except KeyboardInterrupt:
        print("grader serve: stopped; what was accepted and not graded is graded at the next start")
    return 0


def submit_command(args: argparse.Namespace) -> int:
    from grader.service.client import submit_to_service

    if not args.token:
        raise UsageError("--token (or GRADER_TOKEN) is needed: copy it from the service's page")
    if not args.notebook.is_file():
        raise UsageError(f"{args.notebook}: no such file")
    outcome = submit_to_service(args.notebook, args.to, args.token, assignment=args.assignment,
                                wait=not args.no_wait, progress=print)
    print(outcome.describe())
    if outcome.status == "failed":
        raise GraderError(outcome.describe())
    return 0


def _require_service_extra() -> None:
    """The service is an optional extra: without it, say how to get it before anything starts."""
    try:
        import alembic  # noqa: F401 - only whether they import
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"grader serve needs the service's packages ({exc.name} is missing): "
                         "pip install 'grader[serve]'") from None
