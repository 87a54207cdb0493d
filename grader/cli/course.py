"""Course staff's commands: `grader assign` (template and bundle), `grader data` (datasets), and
`grader gradescope build` (the autograder zip)."""

from __future__ import annotations

import argparse
from pathlib import Path

from grader.cli.options import add_course, add_data_root, course_root, data_root
from grader.errors import GraderError, UsageError
from grader.locations import ALL_DATASETS, cache_dir


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="datasets: where they are, and fetching them")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    where = data_sub.add_parser("where", help="say which datasets are present under the data root")
    fetch = data_sub.add_parser("fetch", help="download datasets into the data root (needs the network)")
    fetch.add_argument("datasets", nargs="*", metavar="DATASET",
                       help=f"one or more of {', '.join(ALL_DATASETS)} (default: all)")
    for action, run in ((where, data_where), (fetch, data_fetch)):
        add_data_root(action)
        action.set_defaults(run=run)

    assign = sub.add_parser("assign", help="make the student template and student bundle from a solution notebook")
    assign.add_argument("solution", type=Path)
    assign.add_argument("--out", type=Path, default=Path("assignments"),
                        help="directory for the template and its NAME.checks.json (default: assignments/)")
    add_data_root(assign, purpose=", for a model assignment's bundle")
    assign.set_defaults(run=assign_command)


def add_gradescope_build(gs_sub: argparse._SubParsersAction) -> None:
    build = gs_sub.add_parser("build", help="write the autograder zip for one assignment (upload it as it is)")
    build.lists_assignments = True
    build.add_argument("assignment", help="assignment id")
    build.add_argument("--out", type=Path, default=Path("autograder.zip"), help="zip to write (default: "
                                                                               "autograder.zip)")
    build.add_argument("--data", default="ship", choices=("ship", "fetch"),
                       help="ship: put the datasets the assignment needs into the zip, from the data root "
                            "(default: the image never depends on a download mirror); fetch: setup.sh runs "
                            "`grader data fetch` instead (a smaller zip)")
    build.add_argument("--dataset", action="append", default=None, metavar="DATASET",
                       help=f"a dataset the assignment needs, when its spec does not say ({', '.join(ALL_DATASETS)})")
    build.add_argument("--wheel", type=Path, default=None,
                       help="the grader's wheel to ship (default: built from this checkout)")
    add_course(build)
    build.set_defaults(run=gradescope_build_command)


def data_where(args: argparse.Namespace) -> int:
    from grader.ml.datasets import describe

    root = data_root(args)
    print(f"data root: {root}")
    for dataset in ALL_DATASETS:
        print(f"  {describe(dataset, root)}")
    return 0


def data_fetch(args: argparse.Namespace) -> int:
    from grader.ml.datasets import fetch

    root = data_root(args)
    unknown = [d for d in args.datasets if d not in ALL_DATASETS]
    if unknown:
        raise UsageError(f"unknown dataset {unknown[0]!r}; known: {', '.join(ALL_DATASETS)}")
    for dataset in args.datasets or ALL_DATASETS:
        print(f"fetching {dataset} into {root} ...", flush=True)
        try:
            print(f"  {fetch(dataset, root)}")
        except (OSError, RuntimeError) as exc:  # urllib raises OSErrors; torchvision wraps them
            reason = " ".join(str(exc).split())[:300]
            raise GraderError(f"could not download {dataset} (is this machine online?): {reason}") from None
    return 0


def assign_command(args: argparse.Namespace) -> int:
    from grader.course.authoring import write_bundle, write_template
    from grader.locations import ResourceRequest
    from grader.ml.datasets import DatasetMissing

    target = write_template(args.solution, args.out)
    print(f"wrote {target}")
    request = ResourceRequest(data_root=data_root(args), cache_dir=cache_dir(), device="cpu")
    try:
        bundle = write_bundle(args.solution, args.out, request)
    except DatasetMissing as exc:
        raise UsageError(f"the student bundle needs the assignment's data: {exc}") from None
    print(f"wrote {bundle}" if bundle else f"no spec names {args.solution.name}: no student bundle written")
    return 0


def gradescope_build_command(args: argparse.Namespace) -> int:
    from grader.course.assignment import find_assignment
    from grader.lms.bundle import build_bundle

    assignment = find_assignment(course_root(args), args.assignment)
    bundle = build_bundle(assignment, args.out, data_mode=args.data, data_root=data_root(args), wheel=args.wheel,
                          datasets=tuple(args.dataset) if args.dataset else None)
    data = {"ship": f"shipped: {', '.join(bundle.datasets)}", "fetch": f"fetched by setup.sh: "
            f"{', '.join(bundle.datasets)}"}[bundle.data_mode] if bundle.datasets else "none needed"
    print(f"wrote {bundle.path} ({len(bundle.members)} files; datasets {data})")
    print("upload it as it is: Gradescope › the assignment › Configure Autograder › Zip file upload")
    return 0
