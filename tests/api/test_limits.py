"""A key's rate and quotas, and its place in the queue beside browser users."""

import threading

import openai
import pytest
from django.utils import timezone, translation

from assistant import admission, metering, quotas
from assistant.api import errors
from assistant.api.relay import estimate_prompt
from assistant.completion import pool_name
from assistant.models import ModelProfile, OpenRequest, Quota, UsageRecord
from chat.models import Message
from chat.tasks import generate_reply
from tests.api.conftest import make_key
from tests.api.test_openai_client import QUESTION, wait_for
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_answers_429_with_retry_after_past_the_key_rate(client_for, model_api):
    _key, raw_key = make_key(requests_per_minute=2)
    client = client_for(raw_key)
    client.models.list()

    client.chat.completions.create(model="deepseek-v3", messages=QUESTION)
    client.chat.completions.create(model="deepseek-v3", messages=QUESTION)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="deepseek-v3", messages=QUESTION)

    assert refused.value.code == "rate_limit_exceeded"
    assert 1 <= int(refused.value.response.headers["Retry-After"]) <= 60
    assert model_api.stats["requests"] == 2


@pytest.mark.parametrize(
    ("limit", "seconds", "message"),
    [
        (1, 1, "This API key may send 1 request a minute. Try again in 1 second."),
        (5, 30, "This API key may send 5 requests a minute. Try again in 30 seconds."),
    ],
)
def test_it_says_how_long_to_wait_in_words_that_fit_the_counts(limit, seconds, message):
    with translation.override("en"):
        assert errors.rate_limited(limit, seconds).message == message
    with translation.override("zh-hans"):
        assert errors.rate_limited(limit, seconds).message == (
            f"此 API 密钥每分钟最多发送 {limit} 个请求。请在 {seconds} 秒后重试。"
        )


def spend(user, key, tokens):
    metering.record_request(
        user=user,
        kind="api",
        model="deepseek-v3",
        end_state="stop",
        prompt_tokens=tokens,
        completion_tokens=0,
        api_key=key,
    )


@pytest.mark.parametrize("spent_beyond_edge, admitted", [(0, True), (1, False)])
def test_the_key_quota_admits_a_prompt_that_fits_exactly_and_no_more(
    client_for, model_api, spent_beyond_edge, admitted
):
    key, raw_key = make_key(daily_tokens=1000)
    prompt = estimate_prompt(QUESTION)
    spend(key.user, key, 1000 - prompt + spent_beyond_edge)
    client = client_for(raw_key)

    if admitted:
        client.chat.completions.create(model="deepseek-v3", messages=QUESTION)
        assert model_api.stats["requests"] == 1
        return

    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="deepseek-v3", messages=QUESTION)
    assert refused.value.code == "key_quota_daily"
    assert refused.value.body["type"] == "insufficient_quota"
    assert_retry_after_until(refused.value, quotas.local_day(timezone.now()).end)
    assert model_api.stats["requests"] == 0


def assert_retry_after_until(error, resets_at):
    """The 429 asks the client to wait until `resets_at`, to the second."""
    left = (resets_at - timezone.now()).total_seconds()
    retry_after = int(error.response.headers["Retry-After"])
    # The answer came a moment before this test looked at the clock.
    assert left <= retry_after <= left + 5


def test_a_key_over_its_monthly_quota_is_told_to_retry_at_the_month_end(
    client_for, model_api
):
    key, raw_key = make_key(monthly_tokens=10)
    spend(key.user, key, 10)

    with pytest.raises(openai.RateLimitError) as refused:
        client_for(raw_key).chat.completions.create(
            model="deepseek-v3", messages=QUESTION
        )

    assert refused.value.code == "key_quota_monthly"
    assert_retry_after_until(refused.value, quotas.local_month(timezone.now()).end)


def test_the_team_quota_of_the_key_user_applies(client_for, model_api, team):
    user = make_user()
    user.groups.add(team)
    Quota.objects.create(group=team, daily_tokens=10)
    _key, raw_key = make_key(user=user, group=team)
    spend(user, None, 10)

    with pytest.raises(openai.RateLimitError) as refused:
        client_for(raw_key).chat.completions.create(
            model="deepseek-v3", messages=QUESTION
        )

    assert refused.value.code == "quota_daily"
    assert_retry_after_until(refused.value, quotas.local_day(timezone.now()).end)
    assert UsageRecord.objects.filter(error_code="quota_daily").exists()


def waiting_tickets(pool):
    controller = admission.get_admission()
    if isinstance(controller, admission.RedisAdmission):
        return controller._redis.hlen(controller._keys(pool)[0])
    state = controller._pools.get(pool)
    return len(state.waiting) if state else 0


def test_a_browser_user_goes_before_an_api_batch_that_queued_first(
    client_for, model_api
):
    """One slot: an API job holds it, a second waits, then a chat reply comes.

    The chat reply is interactive and goes first although it queued last;
    the API request waits its turn instead of starving the browser user.
    """
    ModelProfile.ensure("deepseek-v3")
    ModelProfile.objects.filter(name="deepseek-v3").update(concurrency_limit=1)
    pool = pool_name("deepseek-v3")
    _key, raw_key = make_key()
    client = client_for(raw_key)

    def ask(text):
        client.chat.completions.create(
            model="deepseek-v3", messages=[{"role": "user", "content": text}]
        )

    holder = threading.Thread(target=ask, args=["[[sim delay=0.03 words=80]] hold"])
    holder.start()
    wait_for(lambda: model_api.stats["active"] == 1)
    batch = threading.Thread(target=ask, args=["api batch item"])
    batch.start()
    wait_for(lambda: waiting_tickets(pool) == 1)
    conversation = make_conversation(make_user("browser-user"), model="deepseek-v3")
    _asked, reply = queue_reply(conversation, "browser question")
    browser = threading.Thread(target=generate_reply, args=[reply.pk])
    browser.start()
    wait_for(lambda: waiting_tickets(pool) == 2)

    for thread in (holder, batch, browser):
        thread.join(timeout=30)

    asked = [
        body["messages"][-1]["content"] for body in model_api.stats["recent_requests"]
    ]
    assert asked[1:] == ["browser question", "api batch item"]
    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP
    api_records = UsageRecord.objects.filter(kind="api", end_state="stop")
    assert api_records.count() == 2


def test_a_client_that_leaves_the_queue_gives_its_place_up(client_for, model_api):
    ModelProfile.ensure("deepseek-v3")
    ModelProfile.objects.filter(name="deepseek-v3").update(concurrency_limit=1)
    pool = pool_name("deepseek-v3")
    _key, raw_key = make_key()
    client = client_for(raw_key)
    holder = threading.Thread(
        target=client.chat.completions.create,
        kwargs={
            "model": "deepseek-v3",
            "messages": [{"role": "user", "content": "[[sim delay=0.03 words=150]] A"}],
        },
    )
    holder.start()
    wait_for(lambda: model_api.stats["active"] == 1)

    impatient = client.with_options(timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="deepseek-v3", messages=QUESTION)
    wait_for(lambda: waiting_tickets(pool) == 0)
    holder.join(timeout=30)

    asked = [b["messages"][-1]["content"] for b in model_api.stats["recent_requests"]]
    assert asked == ["[[sim delay=0.03 words=150]] A"]
    wait_for(lambda: UsageRecord.objects.filter(end_state="stopped").exists())


def test_a_request_over_the_users_requests_at_once_is_refused_unsent(
    client_for, model_api
):
    key, raw_key = make_key()
    Quota.objects.create(user=key.user, concurrent_requests=1)
    _, writing = queue_reply(make_conversation(key.user), "a chat reply")
    Message.objects.filter(pk=writing.pk).update(status=Message.Status.STREAMING)

    with pytest.raises(openai.RateLimitError) as refused:
        client_for(raw_key).chat.completions.create(
            model="deepseek-v3", messages=QUESTION
        )

    assert refused.value.code == "quota_concurrent"
    assert refused.value.body["type"] == "rate_limit_exceeded"
    assert "(1)" in refused.value.body["message"]
    assert model_api.stats["requests"] == 0
    assert not OpenRequest.objects.exists()


def test_an_api_request_in_flight_counts_for_the_users_chat(client_for, model_api):
    key, raw_key = make_key()
    Quota.objects.create(user=key.user, concurrent_requests=1)
    streaming = threading.Thread(
        target=client_for(raw_key).chat.completions.create,
        kwargs={
            "model": "deepseek-v3",
            "messages": [{"role": "user", "content": "[[sim delay=0.03 words=60]] A"}],
        },
    )
    streaming.start()
    wait_for(lambda: model_api.stats["active"] == 1)
    assert OpenRequest.objects.filter(user=key.user, kind="api").count() == 1

    _, reply = queue_reply(make_conversation(key.user), "a chat question")
    generate_reply(reply.pk)
    streaming.join(timeout=30)

    reply.refresh_from_db()
    assert reply.error_code == "quota_concurrent"
    assert reply.error_params == {"limit": 1, "open": 1}
    assert model_api.stats["requests"] == 1
    assert not OpenRequest.objects.exists()


@pytest.mark.parametrize("stream", [False, True])
def test_requests_at_once_are_given_back_however_a_request_ends(
    client_for, model_api, stream
):
    """A finished, a failed and a refused-upstream request each leave no row."""
    key, raw_key = make_key()
    Quota.objects.create(user=key.user, concurrent_requests=1)
    client = client_for(raw_key)

    def ask(content):
        response = client.chat.completions.create(
            model="deepseek-v3",
            messages=[{"role": "user", "content": content}],
            stream=stream,
        )
        if stream:
            list(response)

    ask("finishes")
    with pytest.raises(openai.APIError):
        ask("[[sim fault=http500]] fails")
    ask("finishes again")

    assert model_api.stats["requests"] == 3
    assert not OpenRequest.objects.exists()
