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


def translations(entry):
    """What an entry translates to: its one text, or one per plural form."""
    if entry.msgid_plural:
        return list(entry.msgstr_plural.values())
    return [entry.msgstr]


def test_it_translates_every_message():
    catalogue = polib.pofile(str(LOCALE_DIR / "django.po"))

    untranslated = [
        e.msgid
        for e in catalogue
        if not translations(e) or not all(translations(e)) or "fuzzy" in e.flags
    ]

    assert untranslated == []


def test_it_ships_a_compiled_catalogue_matching_the_source():
    catalogue = polib.pofile(str(LOCALE_DIR / "django.po"))
    with open(LOCALE_DIR / "django.mo", "rb") as compiled_file:
        compiled = gettext.GNUTranslations(compiled_file)

    stale = [
        e.msgid
        for e in catalogue
        if not e.msgid_plural and compiled.gettext(e.msgid) != e.msgstr
    ]
    # Chinese has one plural form: every count reads the same text.
    stale += [
        e.msgid
        for e in catalogue
        if e.msgid_plural
        and any(
            compiled.ngettext(e.msgid, e.msgid_plural, count) != e.msgstr_plural[0]
            for count in (1, 2)
        )
    ]

    assert stale == [], "run `make messages` to recompile"


def test_it_keeps_placeholders_in_translations():
    catalogue = polib.pofile(str(LOCALE_DIR / "django.po"))
    placeholder = re.compile(r"%\(\w+\)s")

    for entry in catalogue:
        source = entry.msgid_plural or entry.msgid
        for translation in translations(entry):
            assert sorted(placeholder.findall(source)) == sorted(
                placeholder.findall(translation)
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
            "--keyword=ngettext:1,2",
            "--from-code=UTF-8",
            "-o",
            str(extracted),
            *sources,
        ],
        check=True,
    )
    found = {entry.msgid for entry in polib.pofile(str(extracted)) if entry.msgid}

    assert found - known == set()
