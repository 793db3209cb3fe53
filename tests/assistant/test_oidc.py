"""Single sign-on against a real OpenID Connect provider on loopback.

The app runs in the Django test client; the provider is the `oidc-provider`
package under Node (tests/oidc_provider), reached over real HTTP by the app's
back channel and by `authorize()`, which plays the person at its pages.
"""

import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client

from assistant import oidc
from assistant.asgi import application
from assistant.models import ExternalIdentity
from tests.conftest import REPO_DIR
from tests.factories import make_user
from tests.oidc_provider import LoopbackProvider, free_port

APP = "http://testserver"
CALLBACK = f"{APP}/oidc/callback/"
LOGIN_PAGE = f"{APP}/accounts/login/"


@pytest.fixture(scope="session")
def provider(tmp_path_factory):
    provider = LoopbackProvider(
        tmp_path_factory.mktemp("oidc"), [CALLBACK], [LOGIN_PAGE]
    ).start()
    yield provider
    provider.stop()


@pytest.fixture
def sso(settings, provider):
    """The app configured for the provider, as the OIDC_* variables would."""
    settings.OIDC_ISSUER = provider.issuer
    settings.OIDC_RP_CLIENT_ID = provider.client_id
    settings.OIDC_RP_CLIENT_SECRET = provider.client_secret
    settings.OIDC_GROUP_CLAIMS = ["org", "roles", "realm_access.roles"]
    settings.AUTHENTICATION_BACKENDS = [
        "assistant.throttling.SignInThrottleBackend",
        "assistant.oidc.InstitutionBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    cache.delete(oidc.discovery_cache_key(provider.issuer))
    provider.reset_accounts()
    return provider


def start_sign_in(client):
    response = client.get("/oidc/authenticate/")
    assert response.status_code == 302
    return response["Location"]


def return_to_app(client, callback_url):
    assert callback_url.startswith(CALLBACK)
    return client.get(callback_url.removeprefix(APP))


def sign_in(client, provider, login):
    """The whole flow, as a browser would follow it; the callback's response."""
    callback_url = provider.authorize(start_sign_in(client), login)
    return return_to_app(client, callback_url)


def signed_in_user(client):
    return get_user_model().objects.get(pk=client.session["_auth_user_id"])


@pytest.mark.django_db
def test_it_signs_in_through_the_provider_with_pkce_and_shows_the_chat(sso):
    sso.set_account("ada", name="Ada Lovelace", email="ada@example.org")
    client = Client()

    authorize_url = start_sign_in(client)
    query = parse_qs(urlsplit(authorize_url).query)
    assert authorize_url.startswith(f"{sso.issuer}/auth?")
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [CALLBACK]
    response = return_to_app(client, sso.authorize(authorize_url, "ada"))

    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    user = signed_in_user(client)
    assert (user.username, user.email) == ("ada", "ada@example.org")
    assert user.first_name == "Ada Lovelace"
    assert not user.has_usable_password()
    identity = ExternalIdentity.objects.get(user=user)
    assert (identity.issuer, identity.subject) == (sso.issuer, "ada")
    assert client.session["oidc_id_token"].count(".") == 2


@pytest.mark.django_db
def test_it_returns_to_the_page_asked_for(sso):
    client = Client()

    start = client.get("/oidc/authenticate/", {"next": "/c/12/"})
    response = return_to_app(client, sso.authorize(start["Location"], "ada"))

    assert response["Location"] == "/c/12/"


@pytest.mark.django_db
def test_it_refreshes_name_and_email_at_each_sign_in(sso):
    sso.set_account("ada", given_name="Ada", family_name="Byron", email="a@old.org")
    sign_in(Client(), sso, "ada")
    sso.set_account(
        "ada", given_name="Ada", family_name="Lovelace", email="ada@new.org"
    )

    client = Client()
    sign_in(client, sso, "ada")

    user = signed_in_user(client)
    assert (user.first_name, user.last_name) == ("Ada", "Lovelace")
    assert user.email == "ada@new.org"
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_it_keys_users_on_subject_never_on_email(sso):
    local = make_user("ada")
    local.email = "shared@example.org"
    local.save()
    sso.set_account("ada", email="shared@example.org")
    sso.set_account("ada-lab", email="shared@example.org", preferred_username="ada")

    first, second = Client(), Client()
    sign_in(first, sso, "ada")
    sign_in(second, sso, "ada-lab")

    signed_in = {signed_in_user(first), signed_in_user(second)}
    assert len(signed_in) == 2 and local not in signed_in
    assert get_user_model().objects.filter(email="shared@example.org").count() == 3
    subjects = ExternalIdentity.objects.values_list("subject", flat=True)
    assert sorted(subjects) == ["ada", "ada-lab"]


@pytest.mark.django_db
def test_it_maps_claims_to_groups_and_keeps_groups_given_by_hand(sso):
    sso.set_account(
        "ada",
        org="physics",
        roles=["editor", "reviewer"],
        realm_access={"roles": ["staff"]},
    )
    client = Client()
    sign_in(client, sso, "ada")
    user = signed_in_user(client)
    user.groups.add(Group.objects.create(name="pilot"))
    sso.set_account("ada", org="chemistry", roles=["editor"])

    sign_in(Client(), sso, "ada")

    names = set(user.groups.values_list("name", flat=True))
    assert names == {"oidc:chemistry", "oidc:editor", "pilot"}


@pytest.mark.django_db
def test_it_refuses_a_user_the_required_claim_leaves_out(sso, settings):
    settings.OIDC_REQUIRED_CLAIM = "org"
    settings.OIDC_REQUIRED_VALUES = ["physics"]
    sso.set_account("bob", org="chemistry")
    sso.set_account("ada", org="physics")
    client = Client()

    refused = sign_in(client, sso, "bob")

    assert refused.status_code == 403
    assert "没有使用权限" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    assert "oidc_id_token" not in client.session
    assert not get_user_model().objects.exists()
    assert sign_in(client, sso, "ada").status_code == 302


@pytest.mark.django_db
def test_it_explains_a_sign_in_finished_in_another_browser(sso):
    callback_url = sso.authorize(start_sign_in(Client()), "ada")

    response = return_to_app(Client(), callback_url)

    assert response.status_code == 400
    page = response.content.decode()
    assert "已过期" in page and 'href="/oidc/authenticate/"' in page
    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_it_explains_denied_consent_in_the_users_language(sso):
    client = Client(headers={"accept-language": "en"})
    callback_url = sso.authorize(start_sign_in(client), "ada", consent=False)

    response = return_to_app(client, callback_url)

    assert "error=access_denied" in callback_url
    assert response.status_code == 403
    page = response.content.decode()
    assert "Sign-in cancelled" in page and 'href="/accounts/login/"' in page
    assert "_auth_user_id" not in client.session
    assert client.session["oidc_states"] == {}


@pytest.mark.django_db
def test_it_explains_a_provider_that_does_not_answer(sso, settings):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"

    response = Client().get("/oidc/authenticate/")

    assert response.status_code == 503
    page = response.content.decode()
    assert "无法连接" in page and 'href="/oidc/authenticate/"' in page


@pytest.mark.django_db
def test_it_explains_a_provider_that_went_down_during_sign_in(sso, settings, tmp_path):
    lone = LoopbackProvider(tmp_path, [CALLBACK], [LOGIN_PAGE]).start()
    settings.OIDC_ISSUER = lone.issuer
    client = Client()
    try:
        callback_url = lone.authorize(start_sign_in(client), "ada")
    finally:
        lone.stop()

    response = return_to_app(client, callback_url)

    assert response.status_code == 503
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_it_logs_out_at_the_provider_with_the_id_token(sso):
    client = Client()
    sign_in(client, sso, "ada")
    id_token = client.session["oidc_id_token"]
    session_key = client.session.session_key

    response = client.post("/accounts/logout/")

    location = response["Location"]
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(f"{sso.issuer}/session/end?")
    assert query["id_token_hint"] == [id_token]
    assert query["post_logout_redirect_uri"] == [LOGIN_PAGE]
    assert not Session.objects.filter(session_key=session_key).exists()
    assert client.get("/").status_code == 302


@pytest.mark.django_db
def test_it_logs_out_a_local_account_without_the_provider(sso):
    client = Client()
    client.force_login(make_user())

    response = client.post("/accounts/logout/")

    assert response["Location"] == "/accounts/login/"


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_opens_the_websocket_as_the_user_and_closes_it_at_logout(sso):
    client = Client()
    await sync_to_async(sign_in)(client, sso, "ada")
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1")],
    )
    connected, _ = await communicator.connect()
    assert connected  # an anonymous socket is closed at once

    await sync_to_async(client.post)("/accounts/logout/")

    closed = await communicator.receive_output(timeout=10)
    assert closed == {"type": "websocket.close", "code": 4401}
    user = await database_sync_to_async(get_user_model().objects.get)()
    assert user.username == "ada"


@pytest.mark.django_db
def test_it_signs_in_through_the_provider_while_passwords_are_locked_out(sso, settings):
    """The password throttle counts neither provider sign-ins nor their
    failures, and a lockout of password sign-ins leaves the provider open."""
    settings.AXES_FAILURE_LIMIT = 2
    make_user("ada")
    client = Client()
    for _ in range(3):
        client.post("/accounts/login/", {"username": "ada", "password": "wrong"})
    locked = client.post("/accounts/login/", {"username": "ada", "password": "x"})
    assert locked.status_code == 429

    for _ in range(3):
        return_to_app(client, f"{CALLBACK}?error=access_denied&state=gone")
    response = sign_in(client, sso, "ada")

    assert response.status_code == 302
    assert signed_in_user(client).username != ""


@pytest.mark.django_db
def test_it_offers_both_ways_in_when_a_provider_is_configured(sso, settings):
    page = Client().get("/accounts/login/").content.decode()

    assert "统一身份认证登录" in page
    assert 'name="password"' in page

    settings.LOCAL_LOGIN_ENABLED = False
    page = Client().get("/accounts/login/").content.decode()
    assert "统一身份认证登录" in page
    assert 'name="password"' not in page
    refused = Client().post("/accounts/login/", {"username": "a", "password": "b"})
    assert refused.status_code == 405


@pytest.mark.django_db
def test_it_keeps_the_password_form_alone_without_a_provider():
    client = Client()

    page = client.get("/accounts/login/").content.decode()

    assert "统一身份认证登录" not in page
    assert 'name="password"' in page
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/").status_code == 404


def test_it_finds_claim_values_in_every_shape():
    id_token = {"org": "physics", "https://example.org/roles": ["a", "b"]}
    userinfo = {"realm_access": {"roles": ["staff", "a"]}, "verified": True}
    access_token = {"groups": ["lab-1"]}
    sources = [id_token, userinfo, access_token]

    assert oidc.claim_values(sources, "org") == ["physics"]
    assert oidc.claim_values(sources, "https://example.org/roles") == ["a", "b"]
    assert oidc.claim_values(sources, "realm_access.roles") == ["staff", "a"]
    assert oidc.claim_values(sources, "groups") == ["lab-1"]
    assert oidc.claim_values(sources, "verified") == ["true"]
    assert oidc.claim_values(sources, "realm_access.missing") == []


@pytest.mark.parametrize(
    "env, error",
    [
        ({"OIDC_ISSUER": "https://id.example.org"}, "OIDC_CLIENT_ID"),
        ({"LOCAL_LOGIN_ENABLED": "false"}, "OIDC_ISSUER"),
    ],
)
def test_it_stops_at_start_up_on_an_incomplete_configuration(env, error):
    result = subprocess.run(
        [sys.executable, "-c", "import assistant.settings"],
        cwd=REPO_DIR,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
    )

    assert result.returncode != 0
    assert error in result.stderr


def test_it_starts_without_calling_the_provider():
    """Settings and URLs load with the issuer unreachable: discovery waits."""
    script = (
        "import django; django.setup();"
        "from django.conf import settings; from django.urls import resolve;"
        "resolve('/oidc/callback/');"
        "print(settings.AUTHENTICATION_BACKENDS)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_DIR,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "assistant.settings",
            "OIDC_ISSUER": f"http://127.0.0.1:{free_port()}",
            "OIDC_CLIENT_ID": "app",
            "OIDC_CLIENT_SECRET": "secret",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert "assistant.oidc.InstitutionBackend" in result.stdout
