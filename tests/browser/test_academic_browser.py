"""The academic workspace in a real Chromium: upload, review, download."""

from pathlib import Path

import pytest

from academic.diffing import diff_changes, merge
from tests.browser.conftest import sign_in
from tests.browser.test_presets_browser import set_thinking_switch

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


def test_the_thinking_switch_follows_the_model_and_reaches_each_chunk(
    page, live_app, simulator
):
    sign_in(page)  # the first page view makes the model profiles
    set_thinking_switch(live_app, "deepseek-r1-vllm", "chat_template_kwargs")
    text = "In addition, the thinking switch reaches the polish job."

    page.click("[data-academic-link]")
    thinking = page.locator("input[name=thinking]")
    page.select_option("select[name=model]", "deepseek-v3")
    assert thinking.is_hidden()
    page.select_option("select[name=model]", "deepseek-r1-vllm")
    assert thinking.is_visible() and thinking.is_checked()
    thinking.uncheck()
    page.fill("textarea[name=text]", text)
    page.click("[data-start]")
    page.wait_for_selector("[data-job][data-status=done]")

    [body] = [
        body
        for body in simulator.stats["recent_requests"]
        if "the thinking switch reaches" in body["messages"][-1]["content"]
    ]
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert (
        "Moreover, the thinking switch" in page.locator("[data-merged]").text_content()
    )
