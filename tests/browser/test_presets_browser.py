"""A conversation's settings and presets, in a real Chromium against the app."""

import pytest

from tests.browser.conftest import live_manage, sign_in

pytestmark = pytest.mark.browser

MODEL = "deepseek-r1-vllm"


def set_thinking_switch(base_url, model, switch):
    live_manage(
        base_url,
        "shell",
        "-c",
        "from assistant.models import ModelProfile; "
        f"ModelProfile.objects.filter(name='{model}').update(thinking_switch='{switch}')",
    )


def send(page, text):
    """Send `text` and wait until its reply has ended."""
    replies = page.locator("article.message.assistant").count()
    page.select_option("[data-model-select]", MODEL)
    page.fill("[data-composer-text]", text)
    page.press("[data-composer-text]", "Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('article.message.assistant').length > n",
        arg=replies,
    )
    page.wait_for_selector("article.message.assistant:last-child:not(.is-open)")


def last_reply(page):
    return page.locator("article.message.assistant").last


def reply_requests(simulator, question):
    return [
        body
        for body in simulator.stats["recent_requests"]
        if question in body["messages"][-1]["content"]
    ]


def test_a_preset_and_thinking_off_reach_the_next_reply(page, live_app, simulator):
    sign_in(page)  # the first page view makes the model profiles
    set_thinking_switch(live_app, MODEL, "chat_template_kwargs")
    page.reload()
    page.wait_for_selector("html[data-chat-ready]", state="attached")

    send(page, "第一个问题：为什么天空是蓝色的？")
    assert "天空" in last_reply(page).locator(".reasoning-text").text_content()

    page.click("[data-settings-toggle]")
    page.select_option("[data-preset-choice]", "builtin:textbook")
    page.click("[data-preset-apply-button]")
    status = page.locator("[data-settings-status]")
    status.get_by_text("已保存").wait_for()
    assert "教科书" in page.input_value("[data-settings-prompt]")

    thinking = page.locator("[data-settings-thinking]")
    assert thinking.is_visible()
    # R1's profile cannot switch: the panel follows the composer's model.
    page.select_option("[data-model-select]", "deepseek-r1")
    assert thinking.is_hidden()
    page.select_option("[data-model-select]", MODEL)
    thinking.uncheck()
    page.fill("[data-settings-temperature]", "0.4")
    page.evaluate("document.querySelector('[data-settings-status]').textContent = ''")
    page.click("[data-settings-save]")
    status.get_by_text("已保存").wait_for()

    send(page, "第二个问题：为什么晚霞是红色的？")
    reply = last_reply(page)
    assert "晚霞" in reply.locator(".answer").inner_text()
    assert reply.locator("details.reasoning").is_hidden()

    [body] = reply_requests(simulator, "第二个问题")
    assert [m["role"] for m in body["messages"]].count("system") == 1
    assert "教科书" in body["messages"][0]["content"]
    assert body["temperature"] == 0.4
    assert body["chat_template_kwargs"] == {"enable_thinking": False}

    page.reload()
    page.click("[data-settings-toggle]")
    assert "教科书" in page.input_value("[data-settings-prompt]")
    assert page.input_value("[data-settings-temperature]") == "0.4"
    assert not page.locator("[data-settings-thinking]").is_checked()


def test_a_saved_preset_starts_a_new_chat_and_the_panel_fits_a_phone(
    page, live_app, simulator
):
    sign_in(page)
    send(page, "Save my settings")
    page.click("[data-settings-toggle]")
    page.fill("[data-settings-prompt]", "Answer in exactly three bullet points.")
    page.fill("[data-preset-new-name]", "Three bullets")
    page.click("[data-preset-save]")
    page.locator("[data-settings-status]").get_by_text("Three bullets").wait_for()

    page.goto("/")
    page.wait_for_selector("html[data-chat-ready]", state="attached")
    page.select_option("[data-new-chat-preset]", label="Three bullets")
    send(page, "A new chat from my preset")

    [body] = reply_requests(simulator, "A new chat from my preset")
    assert body["messages"][0]["content"].endswith(
        "Answer in exactly three bullet points."
    )
    page.click("[data-settings-toggle]")
    assert page.input_value("[data-settings-prompt]") == (
        "Answer in exactly three bullet points."
    )

    page.set_viewport_size({"width": 375, "height": 740})
    box = page.locator("[data-settings-panel]").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375
    page.locator("[data-settings-save]").scroll_into_view_if_needed()
    assert page.locator("[data-settings-save]").is_visible()
