"""Password sign-ins are throttled per username and address (django-axes)."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client, RequestFactory
from django.urls import reverse

from assistant.throttling import client_ip
from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-9"


@pytest.fixture
def throttle(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    return settings


def sign_in(client, username, password, address="10.0.0.7"):
    return client.post(
        reverse("login"),
        {"username": username, "password": password},
        REMOTE_ADDR=address,
    )


def fail_until_locked(client, username, address="10.0.0.7"):
    for _ in range(3):
        sign_in(client, username, "wrong-password", address)


def test_it_locks_out_a_username_after_repeated_wrong_passwords(throttle, client):
    make_user()
    fail_until_locked(client, "researcher")

    response = sign_in(client, "researcher", PASSWORD)

    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert "data-locked-out" in response.text
    assert "请等待 15 分钟后再试" in response.text


def test_it_explains_the_lockout_in_english_too(throttle, client):
    make_user()
    client.cookies["django_language"] = "en"
    fail_until_locked(client, "researcher")

    response = sign_in(client, "researcher", PASSWORD)

    assert "Too many wrong passwords" in response.text
    assert "Wait 15 minutes" in response.text


def test_it_says_one_minute_in_the_singular(throttle, client):
    throttle.LOGIN_COOLOFF_MINUTES = 1
    make_user()
    client.cookies["django_language"] = "en"
    fail_until_locked(client, "researcher")

    response = sign_in(client, "researcher", PASSWORD)

    assert "Wait 1 minute and try again" in response.text


def test_it_still_signs_in_the_same_user_from_another_address(throttle, client):
    make_user()
    fail_until_locked(client, "researcher")

    response = sign_in(Client(), "researcher", PASSWORD, address="10.0.0.8")

    assert response.status_code == 302


def test_it_still_signs_in_another_user_from_the_same_address(throttle, client):
    make_user()
    make_user("colleague")
    fail_until_locked(client, "researcher")

    other = Client()
    response = sign_in(other, "colleague", PASSWORD)

    assert response.status_code == 302
    assert other.session["_auth_user_id"]


def test_it_forgets_failures_after_a_successful_sign_in(throttle, client):
    make_user()
    sign_in(client, "researcher", "wrong-password")
    sign_in(client, "researcher", "wrong-password")
    assert sign_in(client, "researcher", PASSWORD).status_code == 302
    client.logout()

    sign_in(client, "researcher", "wrong-password")
    sign_in(client, "researcher", "wrong-password")
    response = sign_in(client, "researcher", PASSWORD)

    assert response.status_code == 302


def test_it_lets_the_user_in_again_after_the_cool_off(throttle, client):
    from axes.models import AccessAttempt
    from django.utils import timezone

    make_user()
    fail_until_locked(client, "researcher")
    an_hour_ago = timezone.now() - timezone.timedelta(hours=1)
    AccessAttempt.objects.update(attempt_time=an_hour_ago)

    response = sign_in(client, "researcher", PASSWORD)

    assert response.status_code == 302


def test_it_reads_the_client_from_the_socket_without_trusted_proxies(settings):
    settings.TRUSTED_PROXY_COUNT = 0
    request = RequestFactory().get(
        "/", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="203.0.113.9"
    )

    assert client_ip(request) == "192.0.2.1"


def test_it_reads_the_client_the_last_trusted_proxy_saw(settings):
    """A client cannot dodge the throttle by sending its own header: the
    entries it wrote are left of the ones the proxies appended."""
    settings.TRUSTED_PROXY_COUNT = 1
    request = RequestFactory().get(
        "/",
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.9",
    )

    assert client_ip(request) == "203.0.113.9"


def test_it_locks_out_by_the_forwarded_address_behind_a_proxy(throttle, client):
    throttle.TRUSTED_PROXY_COUNT = 1
    make_user()
    for spoofed in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        client.post(
            reverse("login"),
            {"username": "researcher", "password": "wrong-password"},
            REMOTE_ADDR="10.0.0.2",
            HTTP_X_FORWARDED_FOR=f"{spoofed}, 203.0.113.9",
        )

    response = client.post(
        reverse("login"),
        {"username": "researcher", "password": PASSWORD},
        REMOTE_ADDR="10.0.0.2",
        HTTP_X_FORWARDED_FOR="4.4.4.4, 203.0.113.9",
    )

    assert response.status_code == 429


def test_it_keeps_the_test_clients_login_working(throttle, client):
    """authenticate() without a request is not throttled, and not refused."""
    make_user()

    assert client.login(username="researcher", password=PASSWORD)
    assert get_user_model().objects.count() == 1


def test_it_keeps_the_admin_to_staff(client):
    make_user()
    client.force_login(make_user("colleague"))

    response = client.get("/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_it_refuses_a_non_staff_user_at_the_admin_sign_in(client):
    """Signing in at the admin's own form with a non-staff password does not
    open it either."""
    make_user()

    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "researcher", "password": PASSWORD, "next": "/admin/"},
    )

    assert response.status_code == 200
    assert client.get("/admin/").status_code == 302


def test_it_opens_the_admin_to_staff(client):
    staff = make_user("operator")
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    client.force_login(staff)

    assert client.get("/admin/").status_code == 200
