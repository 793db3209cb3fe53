"""The usage pages: a user's own use and quota, the staff overview."""

import datetime
import json

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from assistant.metering import record_request
from assistant.models import Quota
from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-9"


def use(user, model, tokens, days_ago=0, end_state="stop", error_code=""):
    record_request(
        user=user,
        kind="chat",
        model=model,
        end_state=end_state,
        error_code=error_code,
        prompt_tokens=tokens,
        completion_tokens=tokens,
        reasoning_tokens=tokens // 2,
        now=timezone.now() - datetime.timedelta(days=days_ago),
    )


def chart_of(response):
    page = response.content.decode()
    start = page.index('id="usage-chart-data"')
    body = page[page.index(">", start) + 1 : page.index("</script>", start)]
    return json.loads(body)


@pytest.fixture
def researcher(client):
    user = make_user()
    client.login(username=user.username, password=PASSWORD)
    return user


@pytest.mark.parametrize("name", ["usage-home", "usage-overview"])
def test_it_sends_anonymous_visitors_to_sign_in(client, name):
    response = client.get(reverse(name))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_shows_a_user_their_own_tokens_by_day_and_model(client, researcher):
    use(researcher, "deepseek-r1", 100)
    use(researcher, "deepseek-v3", 40)
    use(researcher, "deepseek-r1", 7, days_ago=3)
    use(researcher, "deepseek-r1", 1000, days_ago=45)
    use(make_user("colleague"), "colleague-model", 5000)

    response = client.get(reverse("usage-home"))

    assert response.status_code == 200
    chart = chart_of(response)
    assert len(chart["days"]) == 30
    assert chart["days"][-1] == timezone.localdate().isoformat()
    series = {line["model"]: line["tokens"] for line in chart["series"]}
    assert set(series) == {"deepseek-r1", "deepseek-v3"}
    assert series["deepseek-r1"][-1] == 200
    assert series["deepseek-r1"][-4] == 14
    assert series["deepseek-v3"][-1] == 80
    assert sum(series["deepseek-r1"]) == 214  # 45 days ago is outside
    assert b"colleague-model" not in response.content
    assert b"usage.js" in response.content


def test_it_shows_what_is_left_of_the_quota(client, researcher):
    group = Group.objects.create(name="lab")
    researcher.groups.add(group)
    Quota.objects.create(group=group, daily_tokens=1000, concurrent_requests=2)
    use(researcher, "deepseek-r1", 150)

    response = client.get(reverse("usage-home"), HTTP_ACCEPT_LANGUAGE="en")

    page = response.content.decode()
    assert "700 of 1000 tokens left" in page
    assert "At most 2 requests queued or running." in page


def test_it_says_one_request_in_the_singular(client, researcher):
    Quota.objects.create(user=researcher, concurrent_requests=1)

    response = client.get(reverse("usage-home"), HTTP_ACCEPT_LANGUAGE="en")

    assert "At most 1 request queued or running." in response.content.decode()


def test_it_says_when_no_quota_applies(client, researcher):
    response = client.get(reverse("usage-home"), HTTP_ACCEPT_LANGUAGE="en")

    assert b"No quota applies to you" in response.content


def test_it_reads_the_user_page_in_a_fixed_number_of_queries(
    client, researcher, django_assert_num_queries
):
    Quota.objects.create(user=researcher, daily_tokens=1000, monthly_tokens=9000)
    for days_ago in range(20):
        use(researcher, "deepseek-r1", 10, days_ago=days_ago)
        use(researcher, "deepseek-v3", 10, days_ago=days_ago)

    # Session, user, the rows, the quotas, the quota's usage.
    with django_assert_num_queries(5):
        response = client.get(reverse("usage-home"))
    assert response.status_code == 200


def test_it_refuses_the_overview_to_users_who_are_not_staff(client, researcher):
    response = client.get(reverse("usage-overview"))

    assert response.status_code == 403


@pytest.fixture
def staff(client):
    user = make_user("operator")
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client.login(username=user.username, password=PASSWORD)
    return user


def test_it_shows_staff_use_by_user_group_model_day_hour_and_end_state(client, staff):
    alice, bob = make_user("alice"), make_user("bob")
    alice.groups.add(Group.objects.create(name="physics"))
    use(alice, "deepseek-r1", 100)
    use(alice, "deepseek-r1", 0, end_state="error", error_code="quota_daily")
    use(bob, "deepseek-v3", 50, days_ago=1)
    use(bob, "deepseek-v3", 10, end_state="stopped")

    response = client.get(reverse("usage-overview"), HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 200
    report = response.context["report"]
    by_user = {row["name"]: row for row in report["by_user"]}
    assert by_user["alice"]["tokens"] == 200
    assert by_user["alice"]["errors"] == 1
    assert by_user["bob"]["requests"] == 2
    by_group = {row["name"]: row["tokens"] for row in report["by_group"]}
    assert by_group == {"physics": 200, None: 120}
    by_model = {row["name"]: row["requests"] for row in report["by_model"]}
    assert by_model == {"deepseek-r1": 2, "deepseek-v3": 2}
    assert [row["name"] for row in report["by_day"]][:2] == [
        timezone.localdate().isoformat(),
        (timezone.localdate() - datetime.timedelta(days=1)).isoformat(),
    ]
    assert len(report["by_hour"]) == 24
    assert sum(row["requests"] for row in report["by_hour"]) == 4
    shares = {row["end_state"]: row["share"] for row in report["by_state"]}
    assert shares == {"stop": 50, "error": 25, "stopped": 25}
    assert report["by_error"] == [{"error_code": "quota_daily", "requests": 1}]
    page = response.content.decode()
    assert "Failure rates" in page and "Busiest hours" in page
    assert "<code>quota_daily</code>" in page


def test_it_reads_the_overview_in_a_fixed_number_of_queries(
    client, staff, django_assert_num_queries
):
    for number in range(12):
        user = make_user(f"user{number}")
        user.groups.add(Group.objects.get_or_create(name=f"group{number % 3}")[0])
        use(user, f"model-{number % 4}", 10 * number, days_ago=number)

    # Session, user, and one each: users, groups, models, days, hours,
    # end states, error codes.
    with django_assert_num_queries(9):
        response = client.get(reverse("usage-overview"))
    assert response.status_code == 200


def test_it_links_the_usage_page_from_the_chat_sidebar(client, researcher):
    response = client.get(reverse("chat-home"))

    assert f'href="{reverse("usage-home")}"'.encode() in response.content


def test_it_lets_administrators_edit_quotas_and_read_records(client):
    admin = make_user("admin")
    admin.is_staff = admin.is_superuser = True
    admin.save(update_fields=["is_staff", "is_superuser"])
    client.login(username="admin", password=PASSWORD)
    quota = Quota.objects.create(group=Group.objects.create(name="lab"), daily_tokens=5)
    use(admin, "deepseek-r1", 10)

    quotas = client.get(reverse("admin:assistant_quota_changelist"))
    edit = client.get(reverse("admin:assistant_quota_change", args=[quota.pk]))
    records = client.get(reverse("admin:assistant_usagerecord_changelist"))

    assert quotas.status_code == edit.status_code == records.status_code == 200
    assert b"lab" in quotas.content
    assert b"deepseek-r1" in records.content
    assert client.get(reverse("admin:assistant_usagerecord_add")).status_code == 403
