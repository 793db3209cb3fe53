"""The Chinese catalogue is complete and compiled."""

import gettext
import re
import shutil
import subprocess
from pathlib import Path

import polib
import pytest

LOCALE_DIR = (
    Path(__file__).resolve().parent.parent / "locale" / "zh_Hans" / "LC_MESSAGES"
)
REPO_DIR = LOCALE_DIR.parents[2]


def test_it_translates_every_message():
    catalogue = polib.pofile(str(LOCALE_DIR / "django.po"))

    untranslated = [e.msgid for e in catalogue if not e.msgstr or "fuzzy" in e.flags]

    assert untranslated == []


def test_it_ships_a_compiled_catalogue_matching_the_source():
    catalogue = polib.pofile(str(LOCALE_DIR / "django.po"))
    with open(LOCALE_DIR / "django.mo", "rb") as compiled_file:
        compiled = gettext.GNUTranslations(compiled_file)

    stale = [e.msgid for e in catalogue if compiled.gettext(e.msgid) != e.msgstr]

    assert stale == [], "run `make messages` to recompile"


def test_it_keeps_placeholders_in_translations():
    catalogue = polib.pofile(str(LOCALE_DIR / "django.po"))
    placeholder = re.compile(r"%\(\w+\)s")

    for entry in catalogue:
        assert sorted(placeholder.findall(entry.msgid)) == sorted(
            placeholder.findall(entry.msgstr)
        ), entry.msgid


def test_it_has_every_translatable_string_in_the_catalogue(tmp_path):
    """makemessages finds nothing the catalogue lacks."""
    if shutil.which("xgettext") is None:
        pytest.skip("GNU gettext is not installed")
    catalogue = polib.pofile(str(LOCALE_DIR / "django.po"))
    known = {entry.msgid for entry in catalogue}
    sources = [
        str(path)
        for folder in ("assistant", "chat", "academic", "templates")
        for path in (REPO_DIR / folder).rglob("*.py")
    ]
    extracted = tmp_path / "extracted.pot"
    subprocess.run(
        [
            "xgettext",
            "-L",
            "Python",
            "--keyword=_",
            "--keyword=gettext_lazy",
            "--keyword=gettext",
            "--from-code=UTF-8",
            "-o",
            str(extracted),
            *sources,
        ],
        check=True,
    )
    found = {entry.msgid for entry in polib.pofile(str(extracted)) if entry.msgid}

    assert found - known == set()
