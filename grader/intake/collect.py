"""Find the submissions in a batch's input: a directory or an LMS zip. Refuses what is unsafe.

A zip is extracted member by member into a staging directory; a member with
an absolute path, a `..` component or a symbolic link is refused with a
message, never written. Symbolic links in an input directory are not
followed (one could point at another student's file or at the grader's).

LMS downloads are recognised by their names and keep the LMS's ids, so that
exports can hand grades back (see `StudentIdentity`):

    Canvas   smithjane_[LATE_]123456_7890123_hw3.ipynb        name_[LATE_]userid_attachmentid_original
    Moodle   Jane Smith_4242_assignsubmission_file_/hw3.ipynb  a folder per participant
             Jane Smith_4242_assignsubmission_file_hw3.ipynb   the same, downloaded without folders

Anything else is a plain submission named after its file or folder.
"""

from __future__ import annotations

import hashlib
import re
import stat
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from grader.errors import UsageError

MAX_MEMBERS = 20_000
MAX_MEMBER_BYTES = 200 * 1024 * 1024
MAX_TOTAL_BYTES = 4 * 1024 * 1024 * 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Canvas: the name is the sortable name lowercased with spaces and most punctuation dropped; it keeps every
# letter, any script's (müllerjosé), and hyphens and apostrophes. Ids are digits; the original file name follows.
_CANVAS_FILE = re.compile(r"(?P<name>(?:[^\W\d_]|[-'’])+)_(?P<late>LATE_)?(?P<user_id>[0-9]+)_"
                          r"(?P<submission_id>[0-9]+)_(?P<original>.+\.ipynb)")
_MOODLE_FOLDER = re.compile(r"(?P<name>.+?)_(?P<participant_id>[0-9]+)_assignsubmission_file_")
_MOODLE_FILE = re.compile(r"(?P<name>.+?)_(?P<participant_id>[0-9]+)_assignsubmission_file_(?P<original>.+\.ipynb)")


@dataclass(frozen=True)
class StudentIdentity:
    """Who a submission belongs to in the LMS it was downloaded from; empty fields where unknown.

    Stored as `GradeResult.student` (`to_dict`), so exports can give grades back to the LMS.
    Ids are strings of digits, kept as the LMS wrote them.
    """

    lms: str = ""  # "canvas" | "moodle" | "" (not an LMS download)
    name: str = ""  # as the LMS wrote it: Canvas "smithjane", Moodle "Jane Smith"
    user_id: str = ""  # Canvas user id (the gradebook's ID column)
    submission_id: str = ""  # Canvas attachment id
    participant_id: str = ""  # Moodle participant id (per assignment: "Participant 4242")
    late: bool = False  # Canvas marked the submission LATE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BatchItem:
    student: str  # also the name of the student's output directory
    notebook: Path
    identity: StudentIdentity = field(default_factory=StudentIdentity)


@dataclass(frozen=True)
class Intake:
    items: tuple[BatchItem, ...]
    problems: tuple[str, ...]  # inputs that were refused, each naming the file and why


def safe_name(text: str) -> str:
    name = _UNSAFE.sub("_", text).strip("._") or "submission"
    return name[:100]


def canvas_identity(file_name: str) -> StudentIdentity | None:
    """The Canvas student of a file named `name_[LATE_]userid_attachmentid_original.ipynb`, else None."""
    match = _CANVAS_FILE.fullmatch(file_name)
    if match is None or match["name"] != match["name"].lower():  # Canvas lowercases it
        return None
    return StudentIdentity(lms="canvas", name=match["name"], user_id=match["user_id"],
                           submission_id=match["submission_id"], late=bool(match["late"]))


def moodle_identity(name: str, *, folder: bool) -> StudentIdentity | None:
    """The Moodle participant of a folder `Full Name_NNNN_assignsubmission_file_` (or such a file), else None."""
    match = (_MOODLE_FOLDER if folder else _MOODLE_FILE).fullmatch(name)
    if match is None or not match["name"].strip():
        return None
    return StudentIdentity(lms="moodle", name=match["name"].strip(), participant_id=match["participant_id"])


def _item(label: str, notebook: Path, identity: StudentIdentity | None) -> BatchItem:
    """An item named after its LMS student where there is one (readable, the same on every download)."""
    if identity is None:
        return BatchItem(label, notebook)
    student = f"{identity.name}_{identity.user_id or identity.participant_id}"
    return BatchItem(student, notebook, identity)


def collect(source: Path, staging: Path) -> Intake:
    source = Path(source)
    if source.is_file() and zipfile.is_zipfile(source):
        problems = extract_zip(source, staging)
        found = collect_directory(staging)
        return Intake(found.items, tuple(problems) + found.problems)
    if source.is_dir():
        return collect_directory(source)
    if source.is_file() and source.suffix == ".ipynb":
        item = _item(source.stem, source, canvas_identity(source.name) or moodle_identity(source.name, folder=False))
        return Intake((replace(item, student=safe_name(item.student)),), ())
    raise UsageError(f"{source}: not a directory, a zip file or a notebook")


def collect_directory(root: Path) -> Intake:
    """One item per notebook: a top-level file, or the notebook(s) in a student's folder."""
    items: list[BatchItem] = []
    problems: list[str] = []
    for entry in sorted(root.iterdir()):
        if entry.is_symlink():
            problems.append(f"{entry.name}: a symbolic link, not followed")
        elif entry.is_file() and entry.suffix == ".ipynb":
            identity = canvas_identity(entry.name) or moodle_identity(entry.name, folder=False)
            items.append(_item(entry.stem, entry, identity))
        elif entry.is_dir() and not entry.name.startswith((".", "__MACOSX")):
            notebooks, links = _notebooks_under(entry)
            problems.extend(f"{entry.name}/{link}: a symbolic link, not followed" for link in links)
            identity = moodle_identity(entry.name, folder=True)
            if len(notebooks) == 1:
                items.append(_item(entry.name, notebooks[0], identity))
            else:
                for nb in notebooks:
                    item = _item(entry.name, nb, identity)
                    items.append(replace(item, student=f"{item.student}/{nb.relative_to(entry).with_suffix('')}"))
    return Intake(tuple(_unique(items)), tuple(problems))


def _notebooks_under(folder: Path) -> tuple[list[Path], list[str]]:
    notebooks, links = [], []
    stack = [folder]
    while stack:
        for entry in sorted(stack.pop().iterdir()):
            if entry.is_symlink():
                links.append(str(entry.relative_to(folder)))
            elif entry.is_dir() and entry.name != ".ipynb_checkpoints":
                stack.append(entry)
            elif entry.is_file() and entry.suffix == ".ipynb":
                notebooks.append(entry)
    return sorted(notebooks), links


def _unique(items: list[BatchItem]) -> list[BatchItem]:
    seen: dict[str, int] = {}
    unique = []
    for item in items:
        name = safe_name(item.student)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}-{seen[name]}"
        unique.append(replace(item, student=name))
    return unique


def extract_zip(archive: Path, staging: Path) -> list[str]:
    """Extract the notebooks of `archive` into `staging`; return what was refused and why."""
    problems: list[str] = []
    staging.mkdir(parents=True, exist_ok=True)
    total = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > MAX_MEMBERS:
                raise UsageError(f"{archive.name} has {len(members):,} entries; at most {MAX_MEMBERS:,} are read")
            for member in members:
                reason = _unsafe_member(member)
                if reason:
                    problems.append(f"{archive.name}: {member.filename!r} refused: {reason}")
                    continue
                if member.is_dir() or not member.filename.endswith(".ipynb"):
                    continue
                total += member.file_size
                if member.file_size > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
                    problems.append(f"{archive.name}: {member.filename!r} refused: too large")
                    continue
                parts = [_fitting(part) for part in PurePosixPath(member.filename).parts]
                target = staging.joinpath(*parts)
                if parts != list(PurePosixPath(member.filename).parts):
                    problems.append(f"{archive.name}: {member.filename!r}: a name longer than the file system "
                                    f"allows, shortened to {'/'.join(parts)!r}")
                created, why = False, "it expands beyond its declared size"
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(target, "xb") as dst:
                        created = True
                        complete = _copy_capped(src, dst, MAX_MEMBER_BYTES)
                except FileExistsError:
                    complete, why = False, "a file or folder of the same name is already there"
                except OSError as exc:  # the disk will not take it (a file where a folder must be): others go on
                    complete, why = False, f"it could not be extracted ({exc.strerror or exc})"
                except (zipfile.BadZipFile, EOFError) as exc:
                    complete, why = False, f"it is damaged ({exc})"
                if not complete:
                    if created:
                        target.unlink(missing_ok=True)
                    problems.append(f"{archive.name}: {member.filename!r} refused: {why}")
    except zipfile.BadZipFile as exc:
        raise UsageError(f"{archive.name} is not a readable zip file ({exc})") from None
    return problems


MAX_NAME_BYTES = 255  # one path component, on every common Linux file system


def _fitting(part: str) -> str:
    """A path component the file system takes: over-long names keep their start, a digest of the whole
    (two long names with one start stay two) and their suffix, within MAX_NAME_BYTES."""
    if len(part.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES:
        return part
    suffix = PurePosixPath(part).suffix if len(PurePosixPath(part).suffix) <= 16 else ""
    digest = hashlib.sha256(part.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    keep = part.encode("utf-8", "surrogatepass")[:MAX_NAME_BYTES - len(suffix) - len(digest) - 2]
    return f"{keep.decode('utf-8', 'ignore')}-{digest}{suffix}"


def _unsafe_member(member: zipfile.ZipInfo) -> str:
    name = member.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "a path that leaves the archive ('..')"
    if stat.S_ISLNK(member.external_attr >> 16):
        return "a symbolic link"
    return ""


def _copy_capped(src, dst, limit: int) -> bool:
    """Copy without trusting the size the archive declares (a zip bomb can lie); False if cut."""
    written = 0
    for block in iter(lambda: src.read(1 << 20), b""):
        written += len(block)
        if written > limit:
            return False
        dst.write(block)
    return True
