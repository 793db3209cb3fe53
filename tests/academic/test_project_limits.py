"""Crafted LaTeX project zips are refused, each with a message that names
what is wrong, before they are inflated."""

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import translation

from academic import project
from academic.models import PolishJob
from tests.factories import make_user

MAIN = b"\\documentclass{article}\\begin{document}x\\end{document}"


def deflated(members, tweak=None):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if tweak:
                tweak(info)
            archive.writestr(info, data)
    return buffer.getvalue()


def refusal(data):
    with translation.override("en"), pytest.raises(project.ProjectProblem) as raised:
        project.read_project(data)
    with translation.override("en"):
        return str(raised.value.message)


def test_it_refuses_a_zip_bomb_by_its_compression_ratio():
    # 4 MB of zeros deflate to about 4 KB: under the size limits, a ratio
    # no TeX source has.
    bomb = deflated({"main.tex": MAIN, "figures/blank.eps": bytes(4 * 1024 * 1024)})

    assert "figures/blank.eps" in refusal(bomb)


def test_it_keeps_a_small_member_that_compresses_well():
    data = deflated({"main.tex": MAIN, "empty.tex": b" " * 100_000})

    assert "empty.tex" in project.read_project(data).members


def test_it_refuses_more_unpacked_bytes_than_the_total_limit(monkeypatch):
    monkeypatch.setattr(project, "MAX_TOTAL_BYTES", 1000)
    data = deflated({"main.tex": MAIN, "a.tex": b"a" * 600, "b.tex": b"b" * 600})

    assert "too large once unpacked" in refusal(data)


def test_it_refuses_more_files_than_the_member_limit(monkeypatch):
    monkeypatch.setattr(project, "MAX_MEMBERS", 3)
    data = deflated({"main.tex": MAIN, **{f"{n}.tex": b"x" for n in range(3)}})

    assert "more than 3 files" in refusal(data)


def test_it_refuses_an_encrypted_member_with_its_name():
    # zipfile writes no encrypted members; set the "encrypted" flag bit in
    # the local and central headers as an encrypting tool would.
    data = bytearray(deflated({"main.tex": MAIN}))
    data[6] |= 0x1
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x1

    assert "main.tex is encrypted" in refusal(bytes(data))


def test_it_refuses_a_damaged_member_with_its_name():
    data = bytearray(deflated({"main.tex": MAIN * 50}))
    # Flip bytes inside the deflated stream, past the 30-byte local header
    # and the name.
    for offset in range(45, 60):
        data[offset] ^= 0xFF

    assert "main.tex is damaged" in refusal(bytes(data))


@pytest.mark.django_db
def test_it_explains_a_zip_bomb_on_the_page_in_chinese(client, model_api):
    client.force_login(make_user())
    bomb = deflated({"main.tex": MAIN, "blank.eps": bytes(4 * 1024 * 1024)})

    response = client.post(
        reverse("academic-home"),
        {
            "file": SimpleUploadedFile("project.zip", bomb),
            "task": "polish",
            "preset": "journal",
            "model": "deepseek-v3",
            "source_kind": "latex",
        },
    )

    assert response.status_code == 400
    assert "blank.eps 解压后远大于其在压缩包中的大小" in response.text
    assert not PolishJob.objects.exists()
