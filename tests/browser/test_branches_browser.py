"""Regenerating answers, editing questions and switching versions in Chromium."""

import json
import re

import pytest

from tests.browser.conftest import sign_in
from tests.browser.test_chat_browser import last_reply, send, wait_for_end

pytestmark = pytest.mark.browser

FAST = "deepseek-v3"


def scripted_answer(simulator, text):
    """The next model reply says `text`, so two versions can be told apart."""
    chunk = {"choices": [{"index": 0, "delta": {"content": text}}]}
    chunk["choices"][0]["finish_reason"] = "stop"
    simulator.queue_events([json.dumps(chunk), "[DONE]"])


def position(message):
    return message.locator(".branch-position")


def test_it_regenerates_an_answer_and_switches_between_the_versions(page, simulator):
    sign_in(page)
    send(page, "What is a gradient? [[sim delay=0.001]]", model=FAST)
    wait_for_end(page)
    first = last_reply(page).locator(".answer").inner_text()

    scripted_answer(simulator, "The second version.")
    last_reply(page).get_by_role("button", name="重新生成").click()
    position(last_reply(page)).filter(has_text="2/2").wait_for()
    wait_for_end(page)
    assert "The second version." in last_reply(page).locator(".answer").inner_text()
    assert page.locator("article.message").count() == 2

    last_reply(page).get_by_role("button", name="上一个版本").click()
    position(last_reply(page)).filter(has_text="1/2").wait_for()
    assert last_reply(page).locator(".answer").inner_text() == first
    assert last_reply(page).get_by_role("button", name="上一个版本").is_disabled()

    page.reload()
    position(last_reply(page)).filter(has_text="1/2").wait_for()
    assert last_reply(page).locator(".answer").inner_text() == first


def test_it_edits_a_question_into_a_new_branch_and_keeps_the_old(page, simulator):
    sign_in(page)
    send(page, "First question [[sim delay=0.001]]", model=FAST)
    wait_for_end(page)
    send(page, "Second question [[sim delay=0.001]]", model=FAST)
    page.locator("article.message").nth(3).wait_for()
    wait_for_end(page)

    question = page.locator("article.message.user").first
    question.get_by_role("button", name="编辑").click()
    question.locator("textarea.edit-text").fill("Edited question [[sim delay=0.001]]")
    scripted_answer(simulator, "An answer to the edit.")
    question.get_by_role("button", name="作为新版本发送").click()

    edited = page.locator("article.message.user").first
    position(edited).filter(has_text="2/2").wait_for()
    wait_for_end(page)
    assert page.locator("article.message").count() == 2
    assert "Edited question" in edited.locator(".question-text").inner_text()
    assert "An answer to the edit." in last_reply(page).inner_text()

    page.reload()
    edited = page.locator("article.message.user").first
    position(edited).filter(has_text="2/2").wait_for()
    edited.get_by_role("button", name="上一个版本").click()
    position(page.locator("article.message.user").first).filter(
        has_text="1/2"
    ).wait_for()
    texts = page.locator("article.message.user .question-text").all_inner_texts()
    assert [t.split(" [[")[0] for t in texts] == ["First question", "Second question"]


def open_second_tab(page):
    """The same conversation in another tab, once its socket follows it.

    The test asks the server for the path on the tab's own socket, after the
    tab's "watch": the answer comes once the server has read the "watch" and
    joined the socket to the conversation.
    """
    other = page.context.new_page()
    servers, sent, heard = [], [], []

    def through_to_server(route):
        server = route.connect_to_server()
        servers.append(server)
        route.on_message(lambda message: (sent.append(message), server.send(message)))
        server.on_message(lambda message: (heard.append(message), route.send(message)))

    other.route_web_socket("**/ws/chat/", through_to_server)
    other.goto(page.url)
    other.wait_for_selector("html[data-chat-ready]", state="attached")
    wait_until(other, lambda: any('"watch"' in str(m) for m in sent))
    conversation_id = int(re.search(r"/c/(\d+)/", page.url).group(1))
    servers[0].send(json.dumps({"action": "path", "conversation_id": conversation_id}))
    wait_until(other, lambda: any('"path"' in str(m) for m in heard))
    return other


def wait_until(page, condition, seconds=20):
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError("the second tab's socket did not get that far")


def test_another_tab_follows_a_switch_and_keeps_an_edit_being_typed(page, simulator):
    sign_in(page)
    send(page, "Two tabs [[sim delay=0.001]]", model=FAST)
    wait_for_end(page)
    scripted_answer(simulator, "The second version.")
    last_reply(page).get_by_role("button", name="重新生成").click()
    position(last_reply(page)).filter(has_text="2/2").wait_for()
    wait_for_end(page)

    other = open_second_tab(page)
    other_question = other.locator("article.message.user").first
    other_question.get_by_role("button", name="编辑").click()
    other_question.locator("textarea.edit-text").fill("half typed")
    last_reply(page).get_by_role("button", name="上一个版本").click()

    position(last_reply(other)).filter(has_text="1/2").wait_for()
    assert "The second version." not in last_reply(other).inner_text()
    assert other_question.locator("textarea.edit-text").input_value() == "half typed"
