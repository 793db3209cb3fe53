"""Paper reading in a real Chromium: each way in, the summary with its
references linked to the extracted text, and a question about the paper."""

import pytest

from tests.academic.papers import build_scipy_pdf, scipy_source
from tests.browser.conftest import sign_in

pytestmark = pytest.mark.browser


def open_reading(page):
    sign_in(page)
    page.click("[data-reading-link]")
    page.select_option("select[name=model]", "deepseek-v3")


def wait_for_summary(page):
    page.wait_for_selector("[data-paper-status=done]", timeout=120000)
    return page.locator("[data-paper-summary]")


def test_it_reads_an_uploaded_pdf_and_answers_from_its_pages(
    page, tmp_path, shared_dir
):
    pdf = build_scipy_pdf(shared_dir, tmp_path)
    open_reading(page)

    page.set_input_files("input[name=file]", str(pdf))
    page.click("[data-read]")
    summary = wait_for_summary(page)

    assert summary.locator("h2", has_text="Key results").count() == 1
    first_ref = summary.locator("a.paper-ref").first
    target = first_ref.get_attribute("href")
    assert target.startswith("#page-")
    first_ref.click()
    assert page.evaluate("location.hash") == target
    assert page.locator(f"{target} [data-page]").is_visible()

    page.click("[data-ask]")
    page.wait_for_selector("html[data-chat-ready]", state="attached")
    page.fill("[data-composer-text]", "Who funds the development of SciPy?")
    page.press("[data-composer-text]", "Enter")
    page.wait_for_selector("article.message.assistant:last-child:not(.is-open)")
    answer = page.locator("article.message.assistant .answer").last.text_content()
    assert "[p. " in answer


def test_it_reads_an_uploaded_latex_source_by_section(page, tmp_path, shared_dir):
    source = tmp_path / "paper.tex"
    source.write_text(scipy_source(shared_dir), "utf-8")
    open_reading(page)

    page.set_input_files("input[name=file]", str(source))
    page.click("[data-read]")
    summary = wait_for_summary(page)

    link = summary.locator("a.paper-ref", has_text="[§ Introduction]").first
    link.click()
    assert page.evaluate("location.hash") == link.get_attribute("href")
    assert page.locator("[data-missing-inputs]").text_content().count("scipy-optimize")


def test_it_reads_pasted_text_and_refuses_an_empty_form(page):
    open_reading(page)
    page.click("[data-read]")
    assert page.locator("[data-form-error]").first.is_visible()

    page.fill(
        "textarea[name=text]",
        "A Tiny Paper\n\nAbstract\nWe find 93.4 degrees at 2000 m.\n\n"
        "1 Method\nA kettle was carried up a mountain.\n",
    )
    page.select_option("select[name=model]", "deepseek-v3")
    page.click("[data-read]")
    summary = wait_for_summary(page)

    assert "93.4 degrees at 2000 m." in summary.text_content()
    summary.locator("a.paper-ref", has_text="[§ Abstract]").first.click()
    assert page.evaluate("location.hash") == "#section-2"
