"""Keys are made, shown once, stored hashed, rotated and revoked on the keys page."""

import csv
import datetime
import hashlib
import io

import pytest
from django.urls import reverse
from django.utils import timezone

from assistant import metering
from assistant.api.models import ApiKey, split_key
from tests.api.conftest import make_key
from tests.factories import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def researcher(client):
    user = make_user()
    client.force_login(user)
    return user


def create_key(client, **fields):
    data = {"name": "nightly batch", **fields}
    response = client.post(reverse("api-keys"), data)
    assert response.status_code == 302
    page = client.get(reverse("api-keys"))
    return page.context["new_key"]["key"], page


def test_it_shows_a_new_key_once_and_stores_only_its_hash(client, researcher):
    raw_key, page = create_key(client, requests_per_minute=30)

    key = ApiKey.objects.get()
    assert raw_key in page.content.decode()
    assert raw_key not in client.get(reverse("api-keys")).content.decode()
    prefix, secret = split_key(raw_key)
    assert prefix == key.prefix
    assert key.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(ApiKey.objects.values().get())
    assert (key.user, key.requests_per_minute) == (researcher, 30)
    assert ApiKey.find(raw_key) == key


def test_it_rotates_a_key_so_that_the_old_secret_stops(client, researcher):
    old_key, _page = create_key(client)
    key = ApiKey.objects.get()

    client.post(reverse("api-key-rotate", args=[key.pk]))
    new_key = client.get(reverse("api-keys")).context["new_key"]["key"]

    assert new_key != old_key
    assert ApiKey.find(old_key) is None
    assert ApiKey.find(new_key) == key


def test_it_revokes_a_key(client, researcher):
    raw_key, _page = create_key(client)
    key = ApiKey.objects.get()

    response = client.post(reverse("api-key-revoke", args=[key.pk]))

    assert response.status_code == 302
    assert ApiKey.find(raw_key) is None
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert client.post(reverse("api-key-rotate", args=[key.pk])).status_code == 302
    assert ApiKey.find(raw_key) is None


def test_a_teammate_manages_the_team_key_and_an_outsider_cannot(client, team):
    owner, teammate = make_user("owner"), make_user("teammate")
    owner.groups.add(team)
    teammate.groups.add(team)
    key, raw_key = make_key(user=owner, group=team)

    client.force_login(make_user("outsider"))
    assert client.post(reverse("api-key-revoke", args=[key.pk])).status_code == 404
    client.force_login(teammate)
    assert key.name in client.get(reverse("api-keys")).content.decode()
    client.post(reverse("api-key-revoke", args=[key.pk]))

    assert ApiKey.find(raw_key) is None


def test_it_offers_only_the_user_teams_for_billing(client, researcher, team):
    from django.contrib.auth.models import Group

    other = Group.objects.create(name="other-lab")
    researcher.groups.add(team)

    response = client.post(
        reverse("api-keys"), {"name": "stolen billing", "group": other.pk}
    )

    assert response.status_code == 200
    assert "group" in response.context["form"].errors
    assert not ApiKey.objects.exists()


def test_the_keys_page_is_in_chinese_by_default(client, researcher):
    page = client.get(reverse("api-keys")).content.decode()

    assert "API 密钥" in page and "创建密钥" in page


def test_it_exports_usage_by_day_key_and_model(client, researcher, team):
    researcher.groups.add(team)
    key, _raw_key = make_key(user=researcher, group=team, name="dify")
    yesterday = timezone.now() - datetime.timedelta(days=1)
    for when, model, tokens in [
        (yesterday, "deepseek-r1", (10, 20)),
        (timezone.now(), "deepseek-r1", (1, 2)),
        (timezone.now(), "deepseek-r1", (3, 4)),
        (timezone.now(), "deepseek-v3", (5, 6)),
    ]:
        metering.record_request(
            user=researcher,
            kind="api",
            model=model,
            end_state="stop",
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            api_key=key,
            group=team,
            now=when,
        )
    make_key(user=make_user("stranger"), name="not mine")

    response = client.get(reverse("api-usage-csv"))

    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["key"], r["team"], r["model"], r["requests"]) for r in rows] == [
        ("dify", "climate-lab", "deepseek-r1", "2"),
        ("dify", "climate-lab", "deepseek-v3", "1"),
        ("dify", "climate-lab", "deepseek-r1", "1"),
    ]
    assert rows[0]["counted_tokens"] == "10" and rows[2]["counted_tokens"] == "30"
    page = client.get(reverse("api-usage")).content.decode()
    assert "dify" in page and "climate-lab" in page


def test_the_pages_need_a_signed_in_user(client):
    assert client.get(reverse("api-keys")).status_code == 302
    assert client.get(reverse("api-usage-csv")).status_code == 302
