"""Signing in with the institutional account, as a person does, in Chromium."""

import re

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture
def sso_page(browser, live_oidc_app):
    base_url, provider = live_oidc_app
    provider.reset_accounts()
    context = browser.new_context(base_url=base_url, locale="zh-CN")
    # The provider's development pages import a web font; with no outside
    # network, refuse such requests at once rather than wait for them.
    context.route(
        re.compile(r"^https?://(?!127\.0\.0\.1[:/]|localhost[:/])"),
        lambda route: route.abort(),
    )
    page = context.new_page()
    page.set_default_timeout(20000)
    yield page, provider
    context.close()


def test_it_signs_in_at_the_provider_chats_and_signs_out_there_too(sso_page):
    page, provider = sso_page
    provider.set_account("ada", name="Ada Lovelace", email="ada@example.org")

    page.goto("/")
    page.click("text=统一身份认证登录")
    page.fill("input[name=login]", "ada")
    page.fill("input[name=password]", "any password")
    page.click("button[type=submit]")
    page.click("button:has-text('Continue')")  # consent to share the profile
    page.wait_for_selector("[data-composer-text]")
    # Enter sends only once the page's script has started.
    page.wait_for_selector("html[data-chat-ready]", state="attached")
    assert page.locator(".sidebar-footer .user").inner_text() == "ada"

    page.fill("[data-composer-text]", "为什么天空是蓝色的？[[sim delay=0.01]]")
    page.press("[data-composer-text]", "Enter")
    page.wait_for_selector("article.message.assistant:last-child:not(.is-open)")
    answer = page.locator("article.message.assistant").last.locator(".answer")
    assert "天空" in answer.inner_text()

    page.click("text=退出登录")
    page.click("button[value=yes]")  # the provider asks before ending its session
    page.wait_for_url(re.compile(r"/accounts/login/$"))
    page.goto("/")
    assert "/accounts/login/" in page.url
    assert page.locator("text=统一身份认证登录").count() == 1
