"""Files pasted or dropped into the chat composer, in a real Chromium."""

import base64

import pytest

from tests.browser.conftest import sign_in
from tests.browser.test_chat_browser import send, wait_for_end

pytestmark = pytest.mark.browser

NOTES_TEXT = "# 结果\n温度 300 K 时电阻下降。"

# Builds Files from base64 in the page, as the clipboard or a drag would hand
# them over, and fires the event the way the browser does; returns whether
# the page kept the browser from doing its own thing with it.
FIRE_WITH_FILES = """([selector, type, files, text]) => {
  const transfer = new DataTransfer();
  if (text) transfer.setData("text/plain", text);
  for (const file of files) {
    const bytes = Uint8Array.from(atob(file.data), (c) => c.charCodeAt(0));
    transfer.items.add(new File([bytes], file.name, { type: file.type }));
  }
  const target = document.querySelector(selector);
  const event = type === "paste"
    ? new ClipboardEvent("paste", {
        clipboardData: transfer, bubbles: true, cancelable: true
      })
    : new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true });
  target.dispatchEvent(event);
  return event.defaultPrevented;
}"""


def a_file(name, data, mime_type):
    return {"name": name, "data": base64.b64encode(data).decode(), "type": mime_type}


def gbk_notes():
    return a_file("实验记录.md", NOTES_TEXT.encode("gbk"), "text/markdown")


def drag_onto(page, selector, files):
    """Carry files over the element and drop them there, as a drag does."""
    page.evaluate(FIRE_WITH_FILES, [selector, "dragenter", files])
    page.evaluate(FIRE_WITH_FILES, [selector, "dragover", files])
    return page.evaluate(FIRE_WITH_FILES, [selector, "drop", files])


def chip_names(page):
    return page.locator("[data-attachment-chips] .attachment-chip").all_inner_texts()


def test_it_sends_the_text_of_a_gbk_markdown_file_dropped_on_the_composer(
    page, simulator
):
    sign_in(page)
    drop_target = page.locator("[data-drop-target]")
    assert drop_target.is_hidden()

    page.evaluate(FIRE_WITH_FILES, ["[data-composer-text]", "dragenter", [gbk_notes()]])
    assert drop_target.is_visible()
    assert "拖放到这里" in drop_target.inner_text()
    assert drag_onto(page, "[data-composer-text]", [gbk_notes()])

    page.wait_for_selector("[data-attachment-chips] .attachment-chip")
    assert drop_target.is_hidden()
    assert "实验记录.md" in chip_names(page)[0]
    send(page, "总结拖进来的文件 [[sim delay=0.002]]")
    wait_for_end(page)

    asked = [
        body["messages"][-1]["content"]
        for body in simulator.stats["recent_requests"]
        if "总结拖进来的文件" in body["messages"][-1]["content"]
    ]
    assert len(asked) == 1
    assert "温度 300 K 时电阻下降。" in asked[0]
    assert '<attachment name="实验记录.md">' in asked[0]
    assert "实验记录.md" in page.locator("article.message.user").last.inner_text()


def test_it_hides_the_drop_target_when_the_files_are_carried_away(page):
    sign_in(page)

    page.evaluate(FIRE_WITH_FILES, ["[data-messages]", "dragenter", [gbk_notes()]])
    page.evaluate(FIRE_WITH_FILES, ["[data-composer-text]", "dragenter", [gbk_notes()]])
    page.evaluate(FIRE_WITH_FILES, ["[data-messages]", "dragleave", [gbk_notes()]])
    assert page.locator("[data-drop-target]").is_visible()
    page.evaluate(FIRE_WITH_FILES, ["[data-composer-text]", "dragleave", [gbk_notes()]])

    assert page.locator("[data-drop-target]").is_hidden()
    assert page.locator("[data-attachment-chips]").is_hidden()


def test_it_attaches_a_pasted_file(page):
    sign_in(page)
    page.fill("[data-composer-text]", "请看附件")

    notes = a_file("notes.txt", "磁滞回线的面积是损耗。".encode(), "text/plain")
    kept_from_browser = page.evaluate(
        FIRE_WITH_FILES, ["[data-composer-text]", "paste", [notes]]
    )

    assert kept_from_browser
    page.wait_for_selector("[data-attachment-chips] .attachment-chip")
    assert "notes.txt" in chip_names(page)[0]
    assert page.input_value("[data-composer-text]") == "请看附件"
    assert page.locator("[data-composer-error]").is_hidden()


def test_it_refuses_a_dropped_picture_with_the_buttons_message(page):
    sign_in(page)
    picture = a_file("photo.png", b"\x89PNG\r\n\x1a\n", "image/png")

    drag_onto(page, "[data-messages]", [picture])

    error = page.locator("[data-composer-error]")
    error.wait_for(state="visible")
    assert "photo.png" in error.inner_text()
    assert "请附加文本、Markdown、LaTeX 或 PDF 文件" in error.inner_text()
    assert page.locator("[data-attachment-chips] .attachment-chip").count() == 0
    assert page.locator("[data-drop-target]").is_hidden()


def test_it_pastes_plain_text_as_text(page, live_app):
    page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=live_app
    )
    sign_in(page)
    page.evaluate("navigator.clipboard.writeText('E = mc^2 的推导')")

    page.focus("[data-composer-text]")
    page.keyboard.press("Control+V")

    page.wait_for_function(
        "() => document.querySelector('[data-composer-text]').value !== ''"
    )
    assert page.input_value("[data-composer-text]") == "E = mc^2 的推导"
    assert page.locator("[data-attachment-chips]").is_hidden()
    assert page.locator("[data-composer-error]").is_hidden()


def test_it_pastes_the_text_of_an_office_copy_not_its_picture(page):
    """Word and Excel put a picture of the copied cells beside their text."""
    sign_in(page)
    rendering = a_file("image.png", b"\x89PNG\r\n\x1a\n", "image/png")

    kept_from_browser = page.evaluate(
        FIRE_WITH_FILES,
        ["[data-composer-text]", "paste", [rendering], "温度\t电阻\n300 K\t12 Ω"],
    )

    assert not kept_from_browser
    page.wait_for_timeout(300)
    assert page.locator("[data-attachment-chips]").is_hidden()
    assert page.locator("[data-composer-error]").is_hidden()
