"""Usage and quotas in a real Chromium against the running app."""

import re

import pytest

from tests.browser.conftest import live_manage, sign_in

pytestmark = pytest.mark.browser


def send(page, text, model="deepseek-v3"):
    page.select_option("[data-model-select]", model)
    page.fill("[data-composer-text]", text)
    page.press("[data-composer-text]", "Enter")


def wait_for_end(page):
    page.wait_for_selector("article.message.assistant:last-child:not(.is-open)")


def set_daily_quota(base_url, tokens):
    """A daily quota for the demo user; None removes it."""
    command = (
        "from django.contrib.auth.models import User; "
        "from assistant.models import Quota; "
        "user = User.objects.get(username='demo'); "
        "Quota.objects.filter(user=user).delete(); "
    )
    if tokens is not None:
        command += f"Quota.objects.create(user=user, daily_tokens={tokens})"
    live_manage(base_url, "shell", "-c", command)


def test_it_charts_the_days_use_from_the_chat_sidebar(page):
    sign_in(page)
    send(page, "What is a tensor? [[sim delay=0.001]]")
    wait_for_end(page)

    page.click("[data-usage-link]")

    page.wait_for_selector("[data-usage-chart] svg rect")
    assert page.locator("h1").inner_text() == "我的用量"
    assert "deepseek-v3" in page.locator(".usage-legend").inner_text()
    assert page.locator(".usage-table tbody tr").count() >= 1
    # Today's bars are drawn last, one per model used, and the chat's is one
    # of them (earlier tests may have used other models today).
    titles = page.locator("[data-usage-chart] svg rect title").all_text_contents()
    today = titles[-1].split(" · ")[0]
    assert re.match(r"\d{4}-\d{2}-\d{2}$", today)
    assert any(re.match(rf"{today} · deepseek-v3 · \d+$", title) for title in titles)


def test_it_tells_a_user_over_quota_what_is_left_and_when_it_resets(page, live_app):
    set_daily_quota(live_app, 1)
    try:
        sign_in(page)
        send(page, "One more question, please.")
        wait_for_end(page)

        note = page.locator("article.message.assistant").last.locator(".status-note")
        text = note.inner_text()
        assert "已达到每日 token 配额" in text
        assert re.search(r"今日 1 个 token 还剩 [01] 个", text)
        assert re.search(r"\d{4}-\d{2}-\d{2} 00:00（Asia/Shanghai）重置", text)
        assert "%(" not in text
    finally:
        set_daily_quota(live_app, None)
