"""The code project analysis in a real Chromium: a zip and a single file
uploaded, the references followed to the source, a follow-up question."""

import re

import pytest

from tests.academic.codeprojects import h11_zip, package_dir
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser

ANALYSIS_TIMEOUT_MS = 90000


def analyse(page, upload):
    page.click("[data-code-link]")
    page.set_input_files("input[name=file]", str(upload))
    page.select_option("select[name=model]", "deepseek-v3")
    page.click("[data-start]")
    page.wait_for_selector(
        "[data-code-analysis][data-status=done]", timeout=ANALYSIS_TIMEOUT_MS
    )


def test_it_analyses_a_zip_links_its_references_and_answers_a_question(page, tmp_path):
    upload = tmp_path / "h11.zip"
    upload.write_bytes(h11_zip())
    sign_in(page)

    analyse(page, upload)

    assert page.locator("[data-overview-text] h2").first.text_content()
    assert page.locator("[data-code-diagram] [data-node]").count() >= 10
    assert "LICENSE.txt" in page.locator("[data-skipped]").text_content()
    reference = page.locator(
        "[data-summary] a[data-code-ref]", has_text="h11/_connection.py:"
    ).first
    line = int(reference.text_content().rsplit(":", 1)[1])
    reference.click()
    page.wait_for_selector("[data-code-source]")
    assert page.url.endswith(f"#L{line}")
    assert page.locator(f"tr#L{line}").text_content().strip().startswith(str(line))

    page.go_back()
    page.click("[data-ask-form] button")
    page.wait_for_selector("html[data-chat-ready]", state="attached")
    page.fill("[data-composer-text]", "Where is _keep_alive defined?")
    page.press("[data-composer-text]", "Enter")
    page.wait_for_selector("article.message.assistant:last-child:not(.is-open)")
    answer = page.locator("article.message.assistant:last-child .answer")
    assert re.search(r"h11/_connection\.py:\d+", answer.text_content())


def test_it_analyses_a_single_cpp_file(page, tmp_path):
    upload = tmp_path / "TGreenlet.cpp"
    upload.write_bytes((package_dir("greenlet") / "TGreenlet.cpp").read_bytes())
    sign_in(page)

    analyse(page, upload)

    assert "tree-sitter" in page.locator("[data-parser-note]").text_content()
    assert page.locator("[data-module='TGreenlet.cpp']").count() == 1
    summary = page.locator("[data-summary]").first.text_content()
    assert "TGreenlet.cpp:1" in summary
    assert page.locator("[data-overview-text]").text_content()


def test_it_explains_a_refused_upload_in_chinese(page, tmp_path):
    upload = tmp_path / "notes.txt"
    upload.write_text("not code")
    sign_in(page)

    page.click("[data-code-link]")
    page.set_input_files("input[name=file]", str(upload))
    page.click("[data-start]")

    error = page.locator("[data-form-error]")
    error.wait_for()
    assert "请上传项目的 .zip 压缩包" in error.text_content()
