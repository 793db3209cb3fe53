"""The pages work under their Content-Security-Policy, in Chromium."""

import pytest

from tests.browser.conftest import sign_in
from tests.browser.test_chat_browser import last_reply, send, wait_for_end

pytestmark = pytest.mark.browser


def test_it_chats_with_math_and_code_without_breaking_the_policy(page):
    violations = []
    page.on(
        "console",
        lambda message: (
            "Content Security Policy" in message.text
            and violations.append(message.text)
        ),
    )
    sign_in(page)

    send(page, "Show me a formula and some code [[sim delay=0.002]]")
    wait_for_end(page)
    reply = last_reply(page)
    reply.locator(".answer .katex").first.wait_for()
    page.goto("/search/?q=formula")
    page.goto("/conversations/")

    assert violations == []
