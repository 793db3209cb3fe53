"""Reading a LaTeX project from a zip: its main file, the files the main file
inputs, and what could not be followed.

The main file is the .tex file with a \\documentclass that no other file
inputs. From it, \\input{x}, \\input x, \\include{x} and \\subfile{x} are
followed relative to the main file's folder (as TeX does, run there), with
".tex" added when the name has no extension; commented-out inputs are not
followed. Only TeX sources are followed: a target with another extension
(`\\input{fig.pgf}`, `\\input{table.csv}`) is often data or generated
code, so it is listed as not processed rather than polished as prose,
unless the archive holds the name with ".tex" added, which TeX (kpathsea)
tries first. An input inside a macro definition (`\\input{parts/#1}`) names
no file on its own, so the files reached only through a macro are listed as
not processed rather than guessed. .bib, .cls, .sty, figures and anything
else stay in the archive untouched.

Archive paths are checked before anything is read: no absolute paths, no
"..", no links, and limits on the member count, the sizes and the
compression ratio, so that a crafted zip can neither escape nor exhaust the
server; an encrypted or damaged member is refused with its name.
"""

import io
import logging
import posixpath
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field

from django.utils.translation import gettext_lazy as _

from academic.checks import strip_comments
from academic.encoding import EncodingProblem, decode_bytes

MAX_MEMBERS = 500
MAX_MEMBER_BYTES = 5 * 1024 * 1024
MAX_TOTAL_BYTES = 50 * 1024 * 1024
MAX_EDITED_FILES = 100
# Text compresses about 4:1 and TeX sources rarely beyond 20:1; a member that
# claims far more is a bomb, refused before it is inflated. Small members
# are exempt, as a page of blanks compresses that well honestly.
MAX_RATIO = 100
RATIO_CHECKED_FROM_BYTES = 1024 * 1024

logger = logging.getLogger(__name__)

DOCUMENTCLASS = re.compile(r"\\documentclass\b")
INPUT = re.compile(
    r"\\(?P<command>input|include|subfile)(?![A-Za-z])"
    r"\s*(?:\{(?P<braced>[^{}]*)\}|(?P<bare>[^\s{}\\%]+))"
)
DEFINITION = re.compile(
    r"\\(?:newcommand|renewcommand|providecommand|def|DeclareRobustCommand)\b"
)


class ProjectProblem(ValueError):
    """An archive that cannot be used; `message` is meant for the user."""

    def __init__(self, message, details=""):
        super().__init__(str(details or message))
        self.message = message


@dataclass
class Project:
    """The files to edit (main first), in the order TeX reads them."""

    members: dict
    edit_order: list = field(default_factory=list)
    decoded: dict = field(default_factory=dict)
    not_processed: list = field(default_factory=list)


def read_project(data):
    """A Project from the bytes of a zip; ProjectProblem when unusable."""
    members = read_members(data)
    main = find_main_file(members)
    project = Project(members=members)
    _follow(project, main)
    _list_unreached(project)
    return project


def read_members(data):
    """{path: bytes} of the archive's files, after the safety checks."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ProjectProblem(_("The file is not a zip archive.")) from None

    infos = [info for info in archive.infolist() if not info.is_dir()]
    if len(infos) > MAX_MEMBERS:
        raise ProjectProblem(
            _("The archive holds more than %(limit)s files.") % {"limit": MAX_MEMBERS}
        )
    if sum(info.file_size for info in infos) > MAX_TOTAL_BYTES:
        raise ProjectProblem(_("The archive is too large once unpacked."))

    members = {}
    for info in infos:
        path = safe_path(info)
        if info.file_size > MAX_MEMBER_BYTES:
            raise ProjectProblem(
                _("%(path)s is too large.") % {"path": path}, info.filename
            )
        if _inflates_suspiciously(info):
            raise ProjectProblem(
                _("%(path)s unpacks to far more than it takes in the archive.")
                % {"path": path},
                info.filename,
            )
        members[path] = _read_member(archive, info, path)
    return members


def _inflates_suspiciously(info):
    if info.file_size < RATIO_CHECKED_FROM_BYTES:
        return False
    return info.file_size > MAX_RATIO * max(info.compress_size, 1)


def _read_member(archive, info, path):
    # Read no more than announced: a lying header cannot inflate it, and
    # zipfile stops with BadZipFile where the data runs past the header.
    try:
        with archive.open(info) as member:
            return member.read(MAX_MEMBER_BYTES + 1)[:MAX_MEMBER_BYTES]
    except RuntimeError:
        # zipfile's way of saying a member is encrypted.
        raise ProjectProblem(
            _("%(path)s is encrypted; upload the archive without a password.")
            % {"path": path},
            info.filename,
        ) from None
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError) as exc:
        logger.info("Project archive member %s unreadable: %s", info.filename, exc)
        raise ProjectProblem(
            _("%(path)s is damaged or packed in a way that cannot be read.")
            % {"path": path},
            info.filename,
        ) from None


def safe_path(info):
    """The member's path, normalised; ProjectProblem if it could escape."""
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    normal = posixpath.normpath(name)
    if (
        name.startswith("/")
        or re.match(r"[A-Za-z]:", name)
        or normal == ".."
        or normal.startswith("../")
        or "/../" in f"/{name}/"
        or stat.S_ISLNK(mode)
    ):
        raise ProjectProblem(
            _("The archive contains an unsafe path: %(path)s") % {"path": name}, name
        )
    return normal


def find_main_file(members):
    """The path of the one .tex file with \\documentclass not input elsewhere."""
    candidates = []
    for path, data in members.items():
        if path.endswith(".tex") and DOCUMENTCLASS.search(_text_of(data)):
            candidates.append(path)
    included = set()
    for path in members:
        if path.endswith(".tex"):
            directory = posixpath.dirname(path)
            for target in input_targets(_text_of(members[path])):
                included.add(_resolve(directory, target))
    mains = [path for path in candidates if path not in included]
    if not mains:
        raise ProjectProblem(_("No main file with \\documentclass was found."))
    # Several documents in one archive: the one nearest the top, then "main".
    return min(mains, key=lambda path: (path.count("/"), "main" not in path, path))


def input_targets(text):
    """The file names a LaTeX text inputs outside comments and definitions."""
    targets = []
    for line in strip_comments(text).splitlines():
        if DEFINITION.search(line):
            continue
        for match in INPUT.finditer(line):
            target = (match["braced"] or match["bare"] or "").strip()
            if target:
                targets.append(target)
    return targets


def _follow(project, main):
    directory = posixpath.dirname(main)
    pending = [(main, None)]
    while pending:
        path, parent = pending.pop(0)
        if path in project.decoded:
            continue
        if path not in project.members:
            project.not_processed.append(
                {"path": path, "reason": "missing", "from": parent}
            )
            continue
        if len(project.decoded) >= MAX_EDITED_FILES:
            project.not_processed.append({"path": path, "reason": "limit"})
            continue
        try:
            decoded = decode_bytes(project.members[path])
        except EncodingProblem:
            project.not_processed.append({"path": path, "reason": "encoding"})
            continue

        project.decoded[path] = decoded
        project.edit_order.append(path)
        for target in input_targets(decoded.text):
            if "#" in target:
                continue
            resolved = _resolve(directory, target, project.members)
            if resolved.endswith(".tex"):
                pending.append((resolved, path))
            else:
                _list_not_tex(project, resolved, path)


def _list_not_tex(project, path, parent):
    listed = {item["path"] for item in project.not_processed}
    if path not in listed:
        project.not_processed.append(
            {"path": path, "reason": "not_tex", "from": parent}
        )


def _list_unreached(project):
    for path in sorted(project.members):
        if path.endswith(".tex") and path not in project.decoded:
            project.not_processed.append({"path": path, "reason": "unreached"})


def _resolve(directory, target, members=()):
    """The archive path TeX reads for `target`, input from `directory`.

    With `members`, a name with another extension ("v1.2", "fig.pgf")
    resolves to the name with ".tex" added when the archive has that file.
    """
    path = posixpath.normpath(posixpath.join(directory, target))
    extension = posixpath.splitext(target)[1]
    if not extension or (extension != ".tex" and f"{path}.tex" in members):
        return f"{path}.tex"
    return path


def _text_of(data):
    try:
        return decode_bytes(data).text
    except EncodingProblem:
        return ""


def write_archive(members, replaced):
    """The zip of `members` ({path: bytes}) with `replaced` paths' new bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in members.items():
            archive.writestr(path, replaced.get(path, data))
    return buffer.getvalue()
