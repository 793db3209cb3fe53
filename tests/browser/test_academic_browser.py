"""The academic workspace in a real Chromium: upload, review, download."""

from pathlib import Path

import pytest

from academic.diffing import diff_changes, merge
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser


def download(page):
    with page.expect_download() as info:
        page.click("[data-download]")
    return Path(info.value.path()).read_bytes()


def test_it_uploads_a_file_rejects_one_change_and_downloads_the_rest(
    page, tmp_path, shared_dir
):
    source = (shared_dir / "academic-cases" / "c01_custom_macros.tex").read_bytes()
    upload = tmp_path / "c01.tex"
    upload.write_bytes(source)
    sign_in(page)

    page.click("[data-academic-link]")
    page.set_input_files("input[name=file]", str(upload))
    page.select_option("select[name=model]", "deepseek-v3")
    page.click("[data-start]")
    page.wait_for_selector("[data-job][data-status=done]")
    page.wait_for_selector(".change")
    accepted = download(page)
    page.locator("[data-toggle-change]").first.click()
    page.wait_for_selector(".change[data-accepted=false]")
    one_rejected = download(page)

    original = source.decode()
    changes = diff_changes(original, accepted.decode())
    assert len(changes) > 1
    expected = merge(original, changes, {c.index: c.index != 0 for c in changes})
    assert one_rejected == expected.encode()
    assert page.locator("[data-merged]").text_content() == expected
    assert page.locator(".change").count() == len(changes)

    page.reload()
    page.wait_for_selector("[data-job][data-status=done] .change")
    assert page.locator(".change[data-accepted=false]").count() == 1
    assert page.locator("[data-merged]").text_content() == expected
    page.click("[data-reject-all]")
    page.wait_for_selector(".change[data-accepted=true]", state="detached")
    assert download(page) == source
