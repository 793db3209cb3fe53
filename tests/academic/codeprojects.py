"""Real projects to analyse, zipped at test time from packages installed here.

h11 (MIT) is a small pure-Python HTTP/1.1 library, installed as a
dependency of the openai SDK's HTTP client. greenlet (MIT and PSF) is a
small C++ project, installed as a dependency of Playwright; its wheel
carries its C++ sources beside the compiled module. Each zip takes the
package's licence files with it, from its dist-info.
"""

import io
import zipfile
from importlib import metadata, util
from pathlib import Path


def package_dir(name):
    return Path(util.find_spec(name).submodule_search_locations[0])


def licence_files(distribution):
    return [
        file
        for file in metadata.distribution(distribution).files
        if "licen" in file.name.lower()
    ]


def package_zip(name, include=None):
    """A zip of package `name` as "name/...", its licences as "name/LICENSE*".

    `include`, if given, picks the files (relative paths) to take.
    """
    root = package_dir(name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if not path.is_file() or (include and not include(relative)):
                continue
            archive.writestr(f"{name}/{relative}", path.read_bytes())
        for licence in licence_files(name):
            # A package that vendors others (pip) carries their licences
            # under the same file names too; the first of each name is kept.
            if f"{name}/{licence.name}" not in archive.namelist():
                archive.writestr(f"{name}/{licence.name}", licence.read_text())
    return buffer.getvalue()


def h11_zip():
    return package_zip("h11", include=lambda path: "__pycache__" not in path)


GREENLET_FILES = (
    "greenlet.cpp",
    "greenlet.h",
    "TGreenlet.hpp",
    "TGreenlet.cpp",
    "TMainGreenlet.cpp",
    "greenlet_refs.hpp",
    "__init__.py",
)


def greenlet_zip():
    """greenlet's core C++ files, its Python entry module and its compiled
    module (which must be left out as binary), with its licences."""
    return package_zip(
        "greenlet",
        include=lambda path: (
            path in GREENLET_FILES or ("/" not in path and path.endswith(".so"))
        ),
    )


def make_zip(members):
    """A zip of {path: bytes or str}, written as given."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, data in members.items():
            archive.writestr(path, data)
    return buffer.getvalue()
