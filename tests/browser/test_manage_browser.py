"""Finding, renaming, pinning, exporting and deleting a conversation, in Chromium."""

import uuid
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import live_manage, sign_in
from tests.browser.test_chat_browser import send, wait_for_end

pytestmark = pytest.mark.browser


def test_it_finds_a_message_and_manages_its_conversation(page):
    sign_in(page)
    word = "Lyapunov" + uuid.uuid4().hex[:6]
    send(page, f"What is a {word} function? [[sim delay=0.005]]")
    wait_for_end(page)
    conversation_url = page.url
    # The toolbar of the conversation the question just made works at once.
    page.fill("[data-rename-input]", "稳定性笔记")
    page.click(".rename-form button")
    page.wait_for_selector('[data-conversation-list] a[aria-current="page"]')
    current = page.locator('[data-conversation-list] a[aria-current="page"]')
    assert current.inner_text() == "稳定性笔记"
    assert page.url == conversation_url

    page.fill("[data-search-input]", word.lower())
    page.press("[data-search-input]", "Enter")
    # The question matches, and so may the answer that repeats its words.
    results = page.locator("[data-search-result]")
    assert results.count() in (1, 2)
    result = results.last
    assert result.locator("mark").first.inner_text() == word
    result.locator("a").click()
    page.wait_for_selector("article.message.linked")
    assert page.url.startswith(conversation_url)
    assert page.input_value("[data-rename-input]") == "稳定性笔记"

    page.click("[data-pin]")
    pinned = page.locator('[data-group="pinned"] a[aria-current="page"]')
    pinned.wait_for()
    assert "稳定性笔记" in pinned.inner_text()

    page.click("details:has([data-export-markdown]) > summary")
    with page.expect_download() as download_info:
        page.click("[data-export-markdown]")
    exported = open(download_info.value.path(), encoding="utf-8").read()
    assert exported.startswith("# 稳定性笔记")
    assert word in exported

    page.click("[data-delete]")
    page.wait_for_selector("[data-undo-delete]")
    assert (
        page.locator('[data-conversation-list] a:has-text("稳定性笔记")').count() == 0
    )
    page.click("[data-undo-delete]")
    page.wait_for_selector("[data-rename-input]")
    assert page.input_value("[data-rename-input]") == "稳定性笔记"
    assert word in page.locator("article.message.user").first.inner_text()


def test_it_copies_a_whole_answer_as_markdown(page):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    sign_in(page)
    send(page, "Explain with a formula and code [[sim delay=0.002]]")
    wait_for_end(page)

    page.locator("article.message.assistant .copy-answer").last.click()

    copied = page.evaluate("navigator.clipboard.readText()")
    assert "$$" in copied and "```" in copied
    assert "<span" not in copied


def test_it_answers_the_keyboard_shortcuts(page):
    sign_in(page)
    page.keyboard.press("Control+K")
    assert page.evaluate("document.activeElement.name") == "q"
    page.keyboard.press("Shift+Escape")
    assert page.evaluate("document.activeElement.name") == "text"

    send(page, "Write at length [[sim delay=0.2 words=400]]")
    page.wait_for_selector("[data-stop]:not([hidden])")
    page.locator("[data-composer-text]").blur()
    page.keyboard.press("Escape")
    page.wait_for_selector('article.message.assistant[data-status="stopped"]')

    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(lambda url: urlsplit(url).path == "/")
    assert page.locator("[data-welcome]").is_visible()


def test_it_fits_a_phone_with_the_sidebar_behind_a_button(browser, live_app):
    context = browser.new_context(
        base_url=live_app, locale="zh-CN", viewport={"width": 390, "height": 800}
    )
    page = context.new_page()
    sign_in(page)
    new_chat = page.locator("[data-new-chat]")

    assert not new_chat.is_visible() or new_chat.bounding_box()["x"] < 0
    page.click("[data-sidebar-toggle]")
    page.wait_for_function(
        "document.querySelector('[data-new-chat]').getBoundingClientRect().x >= 0"
    )
    assert page.get_attribute("[data-sidebar-toggle]", "aria-expanded") == "true"
    composer = page.locator("[data-composer-text]").bounding_box()
    assert composer["x"] >= 0 and composer["x"] + composer["width"] <= 390
    context.close()


def test_it_shares_a_read_only_link_a_colleague_can_open(page, browser, live_app):
    live_manage(
        live_app,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; "
        "User.objects.filter(username='colleague').exists() or "
        "User.objects.create_user('colleague', password='colleague-pass-7')",
    )
    sign_in(page)
    send(page, "Share this derivation $a^2+b^2$ [[sim delay=0.002]]")
    wait_for_end(page)
    page.click("[data-share-menu]")
    page.click("[data-share]")
    page.click("[data-share-menu]")
    url = page.input_value("[data-share-url]")

    colleague = browser.new_context(base_url=live_app, locale="zh-CN").new_page()
    sign_in(colleague, username="colleague", password="colleague-pass-7")
    colleague.goto(url)
    colleague.locator("[data-shared-answer] .katex").first.wait_for()
    assert colleague.locator("[data-composer-text]").count() == 0
    assert "Share this derivation" in colleague.locator(".question-text").inner_text()

    page.click("[data-unshare]")
    page.wait_for_selector("[data-share]", state="attached")
    assert colleague.goto(url).status == 404
    colleague.context.close()


def test_it_attaches_a_file_to_a_question_and_keeps_it_after_a_reload(page, tmp_path):
    notes = tmp_path / "实验记录.md"
    notes.write_bytes("# 结果\n温度 300 K 时电阻下降。".encode("gbk"))
    scan = tmp_path / "photo.png"
    scan.write_bytes(b"\x89PNG\r\n")
    sign_in(page)

    page.set_input_files("[data-attach-input]", str(scan))
    page.wait_for_selector("[data-composer-error]:not([hidden])")
    assert "photo.png" in page.inner_text("[data-composer-error]")
    page.set_input_files("[data-attach-input]", str(notes))
    page.wait_for_selector("[data-attachment-chips] .attachment-chip")
    send(page, "总结附件 [[sim delay=0.002]]")
    wait_for_end(page)

    question = page.locator("article.message.user").last
    assert "实验记录.md" in question.inner_text()
    assert page.locator("[data-attachment-chips]").is_hidden()
    page.reload()
    assert "实验记录.md" in page.locator("article.message.user").last.inner_text()
