"""The sign-in page's lockout, in Chromium against the running app."""

import pytest

pytestmark = pytest.mark.browser

# The live app's default limit (LOGIN_FAILURE_LIMIT).
FAILURE_LIMIT = 5


def try_password(page, username, password):
    page.goto("/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit].primary")
    page.wait_for_load_state()


def test_it_says_why_sign_in_is_refused_after_too_many_wrong_passwords(page):
    # A username of its own, so that the lockout touches no other test.
    for _ in range(FAILURE_LIMIT - 1):
        try_password(page, "intruder", "guess")
    assert "用户名或密码不正确" in page.locator("[role=alert]").inner_text()

    # The failure that reaches the limit is answered with the lockout.
    try_password(page, "intruder", "another-guess")

    alert = page.locator("[data-locked-out]")
    assert "输错密码的次数过多" in alert.inner_text()
    assert "15 分钟" in alert.inner_text()
    assert page.input_value("#id_username") == "intruder"
