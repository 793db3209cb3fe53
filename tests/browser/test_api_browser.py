"""API keys made in a real Chromium, used by the official openai client."""

import threading
import time

import openai
import pytest

from tests.browser.conftest import live_manage, sign_in

pytestmark = pytest.mark.browser

QUESTION = [{"role": "user", "content": "What is entropy?"}]


def client_for(live_app, raw_key):
    return openai.OpenAI(base_url=f"{live_app}/v1", api_key=raw_key, max_retries=0)


def make_key_in_page(page, name):
    page.click("[data-api-keys-link]")
    page.fill("#id_name", name)
    page.click("[data-new-key-form] button[type=submit]")
    return page.locator("[data-new-key-value]").inner_text().strip()


def key_row(page, name):
    return page.locator(f"tr[data-key='{name}']")


def test_a_key_made_rotated_and_revoked_on_the_page(page, live_app):
    sign_in(page)
    raw_key = make_key_in_page(page, "dify lifecycle")

    answer = client_for(live_app, raw_key).chat.completions.create(
        model="deepseek-v3", messages=QUESTION
    )
    assert answer.choices[0].message.content and answer.usage.total_tokens > 0
    page.reload()
    assert page.locator("[data-new-key-value]").count() == 0

    key_row(page, "dify lifecycle").locator("[data-rotate]").click()
    rotated_key = page.locator("[data-new-key-value]").inner_text().strip()
    with pytest.raises(openai.AuthenticationError):
        client_for(live_app, raw_key).models.list()
    assert client_for(live_app, rotated_key).models.list().data

    key_row(page, "dify lifecycle").locator("[data-revoke]").click()
    page.wait_for_selector("[data-message]")
    with pytest.raises(openai.AuthenticationError):
        client_for(live_app, rotated_key).models.list()


def set_concurrency(base_url, limit):
    live_manage(
        base_url,
        "shell",
        "-c",
        "from assistant.models import ModelProfile; "
        "ModelProfile.ensure('deepseek-v3'); "
        f"ModelProfile.objects.filter(name='deepseek-v3').update(concurrency_limit={limit})",
    )


def test_a_browser_chat_goes_before_an_api_batch_queued_earlier(
    page, live_app, simulator
):
    sign_in(page)
    raw_key = make_key_in_page(page, "batch queue")
    client = client_for(live_app, raw_key)
    set_concurrency(live_app, 1)
    try:

        def ask(text):
            client.chat.completions.create(
                model="deepseek-v3", messages=[{"role": "user", "content": text}]
            )

        holder = threading.Thread(
            target=ask, args=["[[sim delay=0.03 words=300]] hold"]
        )
        holder.start()
        deadline = time.monotonic() + 20
        while simulator.stats["active"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        batch = threading.Thread(target=ask, args=["api batch item"])
        batch.start()
        time.sleep(1.0)

        page.goto("/")
        page.wait_for_selector("html[data-chat-ready]", state="attached")
        page.select_option("[data-model-select]", "deepseek-v3")
        page.fill("[data-composer-text]", "browser question")
        page.press("[data-composer-text]", "Enter")
        page.wait_for_selector(
            "article.message.assistant:last-child:not(.is-open)", timeout=60000
        )
        holder.join(timeout=60)
        batch.join(timeout=60)
    finally:
        set_concurrency(live_app, 4)

    asked = [
        body["messages"][-1]["content"]
        for body in simulator.stats["recent_requests"]
        if body["messages"][-1]["content"] in {"browser question", "api batch item"}
    ]
    assert asked == ["browser question", "api batch item"]
