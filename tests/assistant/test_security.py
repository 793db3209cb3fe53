"""The Content-Security-Policy and the other security headers."""

import pytest
from django.urls import reverse

from assistant.security import build_policy
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def directives(policy):
    return {part.split()[0]: part.split()[1:] for part in policy.split("; ") if part}


def test_it_allows_scripts_only_from_the_apps_own_files(client):
    client.force_login(make_user())

    response = client.get(reverse("chat-home"))

    policy = directives(response["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "ws://testserver" in policy["connect-src"]


def test_it_sends_the_policy_on_the_sign_in_page_too(client):
    response = client.get(reverse("login"))

    assert "script-src 'self';" in response["Content-Security-Policy"]
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


def test_it_lets_forms_post_to_the_sign_on_provider_only_when_configured(settings):
    settings.OIDC_ISSUER = ""
    alone = directives(build_policy("app.example"))
    settings.OIDC_ISSUER = "https://sso.example.edu/realms/science"
    with_provider = directives(build_policy("app.example"))

    assert alone["form-action"] == ["'self'"]
    assert with_provider["form-action"] == ["'self'", "https://sso.example.edu"]
