"""A researcher's chat, in a real Chromium against the running app."""

import re
import time
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import live_manage, sign_in

pytestmark = pytest.mark.browser


def send(page, text, model="deepseek-r1"):
    page.select_option("[data-model-select]", model)
    page.fill("[data-composer-text]", text)
    page.press("[data-composer-text]", "Enter")


def last_reply(page):
    return page.locator("article.message.assistant").last


def wait_for_end(page):
    page.wait_for_selector("article.message.assistant:last-child:not(.is-open)")


def test_it_signs_in_chats_and_keeps_both_parts_after_a_reload(page):
    sign_in(page)
    send(page, "为什么天空是蓝色的？[[sim delay=0.05]]")

    reply = last_reply(page)
    panel = reply.locator("details.reasoning")
    panel.wait_for(state="visible")
    # While the model thinks, the panel is open and says so.
    assert panel.get_attribute("open") is not None
    assert "思考中" in reply.locator("summary").inner_text()

    wait_for_end(page)
    assert panel.get_attribute("open") is None  # folded once the answer came
    assert re.search(r"已深度思考|思考了", reply.locator("summary").inner_text())
    reasoning = reply.locator(".reasoning-text").text_content()
    answer = reply.locator(".answer").inner_text()
    assert "天空" in reasoning
    assert reply.locator(".answer .katex").count() >= 2  # inline and display math
    assert reply.locator(".answer pre code.hljs").count() == 1
    assert reply.locator(".answer .copy-code").count() == 1
    assert re.search(r"/c/\d+/$", page.url)

    page.reload()
    reloaded = last_reply(page)
    reloaded.locator(".answer .katex").first.wait_for()
    assert reloaded.locator(".reasoning-text").text_content() == reasoning
    assert reloaded.locator(".answer").inner_text() == answer
    assert reloaded.locator("details.reasoning").get_attribute("open") is None


@pytest.mark.parametrize(
    "model",
    ["deepseek-r1", "deepseek-r1-vllm", "deepseek-r1-tags", "deepseek-r1-prefilled"],
)
def test_it_shows_reasoning_in_its_panel_for_every_format(page, model):
    sign_in(page)
    send(page, "Explain gradient descent [[sim delay=0.01]]", model=model)

    wait_for_end(page)
    reply = last_reply(page)
    assert "gradient descent" in reply.locator(".reasoning-text").text_content()
    answer = reply.locator(".answer").inner_text()
    assert "think>" not in answer
    assert reply.locator(".answer .katex").count() >= 2


def test_it_stops_a_slow_reply_and_keeps_it_after_a_reload(page):
    sign_in(page)
    send(page, "Write a long essay [[sim delay=0.1 words=3000]]", model="deepseek-v3")

    reply = last_reply(page)
    reply.locator(".answer").wait_for(state="visible")
    page.click("[data-stop]")
    page.wait_for_selector("article.message.assistant[data-status=stopped]")

    assert page.locator("[data-stop]").is_hidden()
    assert page.locator("[data-send]").is_visible()
    note = reply.locator(".status-note").inner_text()
    assert "已停止" in note
    kept = reply.locator(".answer").inner_text()
    assert kept

    page.reload()
    reloaded = last_reply(page)
    assert reloaded.get_attribute("data-status") == "stopped"
    assert reloaded.locator(".answer").inner_text().strip() == kept.strip()


def test_it_never_runs_script_from_model_output(page, simulator):
    sign_in(page)
    simulator.queue_events(
        [
            '{"choices":[{"index":0,"delta":{"content":"<script>alert(1)</script> '
            '<img src=x onerror=alert(2)> [x](javascript:alert(3))"},"finish_reason":"stop"}]}',
            "[DONE]",
        ]
    )
    send(page, "show me markup", model="deepseek-v3")

    wait_for_end(page)
    answer = last_reply(page).locator(".answer")
    assert "<script>alert(1)</script>" in answer.inner_text()
    assert answer.locator("script, img").count() == 0
    assert page.dialogs == []


def test_it_explains_a_busy_backend_and_keeps_the_question(page):
    sign_in(page)
    # Refused twice: the first request and the app's one retry; the user's
    # retry is the third and gets through.
    send(page, "这个问题会遇到限流 [[sim fault=http429 fails=2 retry_after=0]]")

    page.wait_for_selector("article.message.assistant[data-status=error]")
    reply = last_reply(page)
    note = reply.locator(".status-note").inner_text()
    assert "429" in note and "Rate limit reached" in note
    assert reply.locator(".answer").is_hidden()
    assert (
        page.locator("article.message.user")
        .last.inner_text()
        .startswith("这个问题会遇到限流")
    )

    reply.locator("button.retry-same").click()
    page.wait_for_selector("article.message.assistant[data-status=stop]")
    assert last_reply(page).locator(".answer").inner_text()


def test_it_counts_down_to_asking_a_busy_backend_again(page):
    sign_in(page)
    send(page, "稍后再试 [[sim fault=http503 fails=1 retry_after=3]]")

    waiting = last_reply(page).locator(".waiting")
    page.wait_for_function(
        "el => el.textContent.includes('503')", arg=waiting.element_handle()
    )
    notice = waiting.inner_text()
    assert "繁忙" in notice and "1" in notice
    seconds = int(re.search(r"(\d+) 秒", notice).group(1))
    assert 1 <= seconds <= 4

    wait_for_end(page)
    assert last_reply(page).get_attribute("data-status") == "stop"
    assert last_reply(page).locator(".answer").inner_text()


def test_it_keeps_a_too_long_message_in_the_composer(page):
    sign_in(page)
    page.fill("[data-composer-text]", "长" * 60001)
    page.press("[data-composer-text]", "Enter")

    error = page.locator("[data-composer-error]")
    error.wait_for(state="visible")
    assert "60001" in error.inner_text()
    assert len(page.input_value("[data-composer-text]")) == 60001


def test_it_speaks_english_when_asked(page):
    sign_in(page)
    page.click(".sidebar-footer button[value=en]")

    page.wait_for_selector("text=New chat")
    assert page.locator("[data-send]").inner_text() == "Send"


def test_it_shows_the_whole_reply_after_a_reload_mid_stream(page):
    sign_in(page)
    send(page, "Reload me [[sim delay=0.03 words=400]]")
    reply = last_reply(page)
    reply.locator(".answer").wait_for(state="visible")

    page.reload()
    wait_for_end(page)
    streamed_after_reload = last_reply(page).locator(".answer").inner_text()
    reasoning_after_reload = last_reply(page).locator(".reasoning-text").text_content()
    page.reload()
    stored = last_reply(page)
    stored.locator(".answer").wait_for(state="visible")

    # What was followed live after the reload equals what the server stored.
    assert stored.locator(".answer").inner_text() == streamed_after_reload
    assert stored.locator(".reasoning-text").text_content() == reasoning_after_reload
    assert stored.get_attribute("data-status") == "stop"


def test_it_counts_thinking_on_from_where_it_was_after_a_reload(page):
    sign_in(page)
    send(page, "Think it over slowly [[sim delay=0.1]]")
    last_reply(page).locator("details.reasoning.is-thinking").wait_for()
    thinking_seen = time.monotonic()
    page.wait_for_timeout(4000)

    page.reload()
    label = last_reply(page).locator("details.reasoning.is-thinking summary")
    # The first figure the label shows after the reload.
    page.wait_for_function(
        "() => /\\d+ s$/.test(document.querySelector("
        "'article.message.assistant:last-child details.reasoning summary'"
        ").textContent)"
    )
    shown = int(re.search(r"(\d+) s$", label.inner_text())[1])
    spent = time.monotonic() - thinking_seen

    assert 4 <= shown <= spent + 2
    page.click("[data-stop]")
    page.wait_for_selector("article.message.assistant[data-status=stopped]")


def test_it_reconnects_after_losing_the_socket_mid_reply_and_loses_nothing(page):
    """The socket between browser and server dies mid-reply; the page
    reconnects on its own and ends with exactly the stored text."""
    routes = []

    def through_to_server(route):
        route.connect_to_server()
        routes.append(route)

    page.route_web_socket("**/ws/chat/", through_to_server)
    sign_in(page)
    send(page, "Keep going [[sim delay=0.03 words=300]]", model="deepseek-v3")
    reply = last_reply(page)
    reply.locator(".answer").wait_for(state="visible")

    routes[0].close(code=1006, reason="network gone")
    page.locator("[data-connection-banner]").wait_for(state="visible")
    wait_for_end(page)
    assert len(routes) >= 2  # the page opened a new socket by itself
    followed = last_reply(page).locator(".answer").inner_text()

    page.reload()
    stored = last_reply(page)
    stored.locator(".answer").wait_for(state="visible")
    assert stored.locator(".answer").inner_text() == followed


BROWSER_FAULTS = [
    "http401",
    "http429",
    "http503",
    "http400_context",
    "inband_error",
    "cut",
    "finish_missing",
    "length_reasoning",
    "no_answer",
]


def test_it_tells_every_fault_apart_in_both_languages(page):
    sign_in(page)
    notes = {}
    for count, fault in enumerate(BROWSER_FAULTS, start=1):
        send(page, f"{fault} [[sim fault={fault} delay=0.005 retry_after=0]]")
        page.wait_for_function(
            "n => document.querySelectorAll('article.message.assistant').length === n",
            arg=count,
        )
        wait_for_end(page)
        reply = last_reply(page)
        notes[fault] = (
            reply.get_attribute("data-status"),
            reply.locator(".status-note").inner_text(),
        )

    assert all(text.strip() for _, text in notes.values()), notes
    # Distinct failures read differently: no two share a message.
    assert len({text for _, text in notes.values()}) == len(BROWSER_FAULTS)
    assert notes["http429"][1] != notes["http401"][1]
    assert notes["cut"][0] == "incomplete"
    assert notes["length_reasoning"][0] == "length_in_reasoning"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in notes["http401"][1])

    page.click(".sidebar-footer button[value=en]")
    page.wait_for_selector("text=New chat")
    english = page.locator("article.message.assistant .status-note")
    texts = [english.nth(i).inner_text() for i in range(english.count())]
    assert any("429" in text and "busy" in text for text in texts), texts
    assert any("cut off" in text or "output limit" in text for text in texts)


def test_it_shows_a_reply_still_streaming_after_switching_away_and_back(page):
    sign_in(page)
    send(page, "Long one [[sim delay=0.03 words=500]]", model="deepseek-v3")
    last_reply(page).locator(".answer").wait_for(state="visible")
    conversation_path = urlsplit(page.url).path

    page.click("[data-new-chat]")
    page.wait_for_selector("[data-welcome]:not([hidden])")
    page.click(f"[data-conversation-list] a[href='{conversation_path}']")

    reply = last_reply(page)
    assert reply.get_attribute("class").find("is-open") != -1
    wait_for_end(page)
    followed = reply.locator(".answer").inner_text()
    page.reload()
    assert last_reply(page).locator(".answer").inner_text() == followed


def set_concurrency(base_url, model, limit):
    live_manage(
        base_url,
        "shell",
        "-c",
        "from assistant.models import ModelProfile; "
        f"ModelProfile.objects.filter(name='{model}').update(concurrency_limit={limit})",
    )


def queue_behind_a_held_slot(page, browser, live_app, question):
    """A colleague's page whose question waits for the model's one slot,
    held by `page`; returns it once it shows place 1."""
    sign_in(page)
    send(page, "Hold the slot [[sim delay=0.03 words=300]]", model="deepseek-v3")
    last_reply(page).locator(".answer").wait_for(state="visible")

    other = browser.new_context(base_url=live_app, locale="zh-CN").new_page()
    sign_in(other)
    send(other, question, model="deepseek-v3")
    waiting = last_reply(other).locator(".waiting")
    waiting.wait_for(state="visible")
    other.wait_for_function(
        "el => el.textContent.includes('1')", arg=waiting.element_handle()
    )
    return other


def test_it_shows_a_queued_reply_its_place_until_the_backend_is_free(
    page, browser, live_app
):
    set_concurrency(live_app, "deepseek-v3", 1)
    try:
        other = queue_behind_a_held_slot(page, browser, live_app, "我在排队吗？")
        assert "排队" in last_reply(other).locator(".waiting").inner_text()

        wait_for_end(other)
        assert last_reply(other).get_attribute("data-status") == "stop"
        assert last_reply(page).get_attribute("data-status") == "stop"
        other.context.close()
    finally:
        set_concurrency(live_app, "deepseek-v3", 4)


def test_a_reply_stopped_in_the_queue_says_it_left_the_queue(page, browser, live_app):
    set_concurrency(live_app, "deepseek-v3", 1)
    try:
        other = queue_behind_a_held_slot(
            page, browser, live_app, "我先排队，然后不等了"
        )
        other.click("[data-stop]")
        other.wait_for_selector("article.message.assistant[data-status=stopped]")

        note = last_reply(other).locator(".status-note").inner_text()
        assert "退出排队" in note and "保留" not in note
        other.context.close()
        page.click("[data-stop]")
    finally:
        set_concurrency(live_app, "deepseek-v3", 4)


def test_a_second_enter_before_the_server_answers_sends_nothing_more(page):
    sign_in(page)
    page.select_option("[data-model-select]", "deepseek-v3")
    page.fill("[data-composer-text]", "double-enter-probe once please")
    page.press("[data-composer-text]", "Enter")
    page.press("[data-composer-text]", "Enter")
    wait_for_end(page)

    assert page.locator("article.message.user").count() == 1
    page.goto("/conversations/")
    titles = page.locator(".conversation-list a", has_text="double-enter-probe")
    assert titles.count() == 1
