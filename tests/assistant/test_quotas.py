"""Quotas at the edge: exactly at the limit, one over, the local resets."""

import datetime
import threading
import time
import uuid
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import ValidationError

from assistant import quotas
from assistant.admission import BATCH, INTERACTIVE, Cancelled
from assistant.completion import CompletionFailure, complete
from assistant.eventlog import get_event_log
from assistant.metering import record_request
from assistant.models import ModelProfile, OpenRequest, Quota, UsageRecord
from assistant.quotas import check_quota, limits_for
from chat.models import Message
from chat.tasks import generate_reply
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(autouse=True)
def local_time_zone(settings):
    settings.TIME_ZONE = "Asia/Shanghai"


def local(*args):
    return datetime.datetime(*args, tzinfo=SHANGHAI)


def use(user, tokens, when):
    record_request(
        user=user,
        kind="chat",
        model="deepseek-r1",
        end_state="stop",
        prompt_tokens=tokens,
        completion_tokens=0,
        now=when,
    )


def nothing_open():
    return 0


def test_it_admits_a_request_that_reaches_the_daily_limit_exactly():
    user = make_user()
    Quota.objects.create(user=user, daily_tokens=1000)
    use(user, 900, local(2026, 12, 4, 9, 0))

    refusal = check_quota(user, 100, nothing_open, now=local(2026, 12, 4, 10, 0))

    assert refusal is None


def test_it_refuses_one_token_over_the_daily_limit_saying_what_is_left():
    user = make_user()
    Quota.objects.create(user=user, daily_tokens=1000)
    use(user, 900, local(2026, 12, 4, 9, 0))

    refusal = check_quota(user, 101, nothing_open, now=local(2026, 12, 4, 10, 0))

    assert refusal.code == "quota_daily"
    assert refusal.params == {
        "limit": 1000,
        "used": 900,
        "left": 100,
        "needed": 101,
        "resets": "2026-12-05 00:00",
        "zone": "Asia/Shanghai",
    }


def test_it_says_how_many_seconds_are_left_until_a_quota_resets():
    daily, monthly = make_user("daily"), make_user("monthly")
    Quota.objects.create(user=daily, daily_tokens=1000)
    Quota.objects.create(user=monthly, monthly_tokens=1000)
    use(daily, 900, local(2026, 12, 31, 9, 0))
    use(monthly, 900, local(2026, 12, 1, 9, 0))
    before_midnight = local(2026, 12, 31, 23, 59, 30)

    day_refusal = check_quota(daily, 101, nothing_open, now=before_midnight)
    month_refusal = check_quota(monthly, 101, nothing_open, now=before_midnight)

    assert day_refusal.code == "quota_daily"
    assert day_refusal.seconds_to_reset(before_midnight) == 30
    assert day_refusal.seconds_to_reset(local(2026, 12, 31, 23, 59, 59, 500)) == 1
    assert month_refusal.code == "quota_monthly"
    assert month_refusal.seconds_to_reset(local(2026, 12, 20, 0, 0)) == 12 * 86400


def test_it_resets_the_daily_quota_at_local_midnight():
    """Midnight in Shanghai is 16:00 UTC: yesterday's use stops counting then."""
    user = make_user()
    Quota.objects.create(user=user, daily_tokens=1000)
    use(user, 1000, local(2026, 12, 4, 23, 58))

    before = check_quota(user, 1, nothing_open, now=local(2026, 12, 4, 23, 59, 59))
    after = check_quota(user, 1, nothing_open, now=local(2026, 12, 5, 0, 0, 0))

    assert before.code == "quota_daily" and before.params["left"] == 0
    assert after is None
    assert local(2026, 12, 5).astimezone(datetime.UTC).hour == 16


def test_it_resets_the_monthly_quota_on_the_first():
    user = make_user()
    Quota.objects.create(user=user, monthly_tokens=5000)
    use(user, 3000, local(2026, 11, 1, 0, 0))
    use(user, 2000, local(2026, 11, 30, 12, 0))

    end_of_month = check_quota(user, 1, nothing_open, now=local(2026, 11, 30, 23, 59))
    first = check_quota(user, 1, nothing_open, now=local(2026, 12, 1, 0, 0))

    assert end_of_month.code == "quota_monthly"
    assert end_of_month.params["used"] == 5000
    assert end_of_month.params["resets"] == "2026-12-01 00:00"
    assert first is None


def test_it_applies_the_tightest_of_the_users_and_the_groups_quotas():
    user = make_user()
    lab = Group.objects.create(name="lab")
    department = Group.objects.create(name="department")
    user.groups.add(lab, department)
    Quota.objects.create(user=user, daily_tokens=1000, concurrent_requests=4)
    Quota.objects.create(group=lab, daily_tokens=500)
    Quota.objects.create(group=department, monthly_tokens=20000, daily_tokens=800)
    Quota.objects.create(group=Group.objects.create(name="other"), daily_tokens=1)

    limits = limits_for(user)

    assert limits.daily_tokens == 500
    assert limits.monthly_tokens == 20000
    assert limits.concurrent_requests == 4
    assert check_quota(user, 501, nothing_open).code == "quota_daily"
    assert check_quota(user, 500, nothing_open) is None


def test_it_counts_only_the_users_own_use():
    user, colleague = make_user(), make_user("colleague")
    Quota.objects.create(user=user, daily_tokens=100)
    use(colleague, 5000, local(2026, 12, 4, 9, 0))

    assert check_quota(user, 100, nothing_open, now=local(2026, 12, 4, 10)) is None


def test_it_refuses_past_the_concurrent_request_limit():
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=2)

    assert check_quota(user, 10, lambda: 1) is None
    refusal = check_quota(user, 10, lambda: 2)

    assert refusal.code == "quota_concurrent"
    assert refusal.params == {"limit": 2, "open": 2}


def test_it_costs_one_query_without_quotas_and_one_more_with_token_limits(
    django_assert_num_queries,
):
    user = make_user()
    use(user, 10, local(2026, 12, 4, 9, 0))

    def must_not_count():
        raise AssertionError("no concurrency limit: nothing to count")

    with django_assert_num_queries(1):
        assert check_quota(user, 10, must_not_count) is None

    Quota.objects.create(user=user, daily_tokens=1000, monthly_tokens=10000)
    with django_assert_num_queries(2):
        assert check_quota(user, 10, must_not_count) is None


def test_it_refuses_a_reply_over_quota_without_calling_the_model(model_api):
    user = make_user()
    Quota.objects.create(user=user, daily_tokens=5)
    _, reply = queue_reply(make_conversation(user), "Why is the sky blue?")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.ERROR
    assert reply.error_code == "quota_daily"
    assert reply.error_params["limit"] == 5 and reply.error_params["left"] == 5
    assert reply.error_params["needed"] == reply.prompt_estimate
    assert model_api.stats["requests"] == 0
    end = get_event_log().read(reply.stream_key)[-1]
    assert end["kind"] == "end" and end["error_code"] == "quota_daily"
    assert end["error_params"] == reply.error_params
    record = UsageRecord.objects.get()
    assert (record.error_code, record.counted_tokens) == ("quota_daily", 0)


def test_it_refuses_a_reply_while_another_is_being_written(model_api):
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    conversation = make_conversation(user)
    _, writing = queue_reply(conversation, "first")
    Message.objects.filter(pk=writing.pk).update(status=Message.Status.STREAMING)
    _, reply = queue_reply(conversation, "second")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.error_code == "quota_concurrent"
    assert reply.error_params == {"limit": 1, "open": 1}
    assert model_api.stats["requests"] == 0


def test_it_lets_the_earlier_of_two_queued_replies_go_first(model_api):
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    conversation = make_conversation(user)
    _, first = queue_reply(conversation, "first")
    _, second = queue_reply(conversation, "second")

    generate_reply(first.pk)

    first.refresh_from_db()
    assert first.status == Message.Status.STOP
    assert second.status == Message.Status.QUEUED


def test_it_lets_a_reply_under_quota_through(model_api):
    user = make_user()
    Quota.objects.create(user=user, daily_tokens=100000, concurrent_requests=1)
    _, reply = queue_reply(make_conversation(user), "Why is the sky blue?")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP
    assert model_api.stats["requests"] == 1


def test_it_needs_either_a_user_or_a_group():
    with pytest.raises(ValidationError):
        Quota(daily_tokens=10).full_clean()
    with pytest.raises(ValidationError):
        Quota(
            user=make_user(), group=Group.objects.create(name="g"), daily_tokens=1
        ).full_clean()


def polish(user, text="Polish: the results is good.", priority=BATCH, stop_key=None):
    return complete(
        ModelProfile.ensure("deepseek-v3"),
        [{"role": "user", "content": text}],
        200,
        user_id=user.pk,
        kind="polish",
        priority=priority,
        stop_key=stop_key or f"test:quota:{uuid.uuid4().hex}",
    )


def test_a_chat_reply_counts_the_users_polish_requests_in_flight(model_api):
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    OpenRequest.objects.create(user=user, kind="polish")
    _, reply = queue_reply(make_conversation(user), "a question")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.error_code == "quota_concurrent"
    assert reply.error_params == {"limit": 1, "open": 1}
    assert model_api.stats["requests"] == 0


def test_interactive_work_over_the_limit_is_refused_with_the_figures(model_api):
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    _, writing = queue_reply(make_conversation(user), "first")
    Message.objects.filter(pk=writing.pk).update(status=Message.Status.STREAMING)

    with pytest.raises(CompletionFailure) as refused:
        polish(user, priority=INTERACTIVE)

    assert refused.value.code == "quota_concurrent"
    assert "limit 1" in refused.value.detail and "open 1" in refused.value.detail
    assert model_api.stats["requests"] == 0
    assert not OpenRequest.objects.exists()


def test_a_request_left_by_a_dead_worker_stops_counting(model_api, settings):
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    stale = OpenRequest.objects.create(user=user, kind="polish")
    too_old = quotas.in_flight_since() - datetime.timedelta(seconds=1)
    OpenRequest.objects.filter(pk=stale.pk).update(started=too_old)

    assert polish(user).answer
    assert model_api.stats["requests"] == 1


@pytest.mark.django_db(transaction=True)
def test_batch_work_over_the_limit_waits_for_the_users_earlier_requests(model_api):
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    # A slow first chunk, then a second that must not start before it ends.
    results = {}

    def run(name, text):
        results[name] = polish(user, text)

    first = threading.Thread(
        target=run, args=["first", "[[sim delay=0.05 words=60]] Polish this."]
    )
    first.start()
    while not OpenRequest.objects.exists() and first.is_alive():
        time.sleep(0.01)
    second = threading.Thread(target=run, args=["second", "Polish that."])
    second.start()
    first.join(30)
    second.join(30)

    assert results["first"].answer and results["second"].answer
    assert model_api.stats["max_active"] == 1
    assert model_api.stats["requests"] == 2
    assert not OpenRequest.objects.exists()
    first_record, second_record = UsageRecord.objects.order_by("pk")
    assert second_record.queue_ms is not None


def test_batch_work_waiting_its_turn_can_be_stopped(model_api):
    user = make_user()
    Quota.objects.create(user=user, concurrent_requests=1)
    OpenRequest.objects.create(user=user, kind="polish")
    stop_key = f"test:quota:{uuid.uuid4().hex}"
    cache.set(stop_key, True, 30)

    with pytest.raises(Cancelled):
        polish(user, stop_key=stop_key)

    assert model_api.stats["requests"] == 0
    assert OpenRequest.objects.count() == 1
    assert UsageRecord.objects.get().end_state == "stopped"
