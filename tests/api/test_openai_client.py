"""The official openai client against the app's /v1, served by Daphne."""

import threading
import time

import openai
import pytest

from assistant.api.models import split_key
from assistant.models import ModelProfile, UsageRecord
from tests.api.conftest import make_key

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = [{"role": "user", "content": "What is entropy?"}]


def wait_for(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("the condition did not come true in time")
        time.sleep(0.05)


def test_it_answers_with_reasoning_and_usage(client_for, team):
    key, raw_key = make_key(group=team)

    answer = client_for(raw_key).chat.completions.create(
        model="deepseek-r1", messages=QUESTION
    )

    message = answer.choices[0].message
    assert message.content and answer.choices[0].finish_reason == "stop"
    assert message.model_extra["reasoning_content"]
    usage = answer.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.completion_tokens_details.reasoning_tokens > 0
    record = UsageRecord.objects.get()
    assert (record.kind, record.end_state, record.api_key, record.group) == (
        "api",
        "stop",
        key,
        team,
    )
    assert record.counted_tokens == usage.total_tokens


def test_it_streams_and_ends_with_the_usage(client_for):
    _key, raw_key = make_key()

    chunks = list(
        client_for(raw_key).chat.completions.create(
            model="deepseek-r1", messages=QUESTION, stream=True
        )
    )

    text = [c.choices[0].delta for c in chunks if c.choices]
    answer = "".join(delta.content or "" for delta in text)
    reasoning = "".join(
        (delta.model_extra or {}).get("reasoning_content") or "" for delta in text
    )
    assert answer and reasoning
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert (
        usage.completion_tokens > 0 and usage.completion_tokens_details.reasoning_tokens
    )
    assert UsageRecord.objects.get().first_token_ms is not None


@pytest.mark.parametrize(
    "model, field",
    [
        ("deepseek-r1-vllm", "reasoning_content"),
        ("deepseek-r1-tags", "reasoning"),
        ("deepseek-r1", "reasoning"),
    ],
)
def test_it_puts_the_reasoning_where_the_client_asks(client_for, model, field):
    _key, raw_key = make_key()
    extra = {} if field == "reasoning_content" else {"reasoning_field": field}

    answer = client_for(raw_key).chat.completions.create(
        model=model, messages=QUESTION, extra_body=extra
    )

    message = answer.choices[0].message
    assert message.model_extra[field]
    assert "<think>" not in message.content


def test_it_can_give_the_reasoning_between_think_tags(client_for):
    _key, raw_key = make_key()

    chunks = client_for(raw_key).chat.completions.create(
        model="deepseek-r1",
        messages=QUESTION,
        stream=True,
        extra_body={"reasoning_field": "think_tags"},
    )

    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content.startswith("<think>")
    reasoning, _sep, answer = content.partition("</think>")
    assert reasoning[len("<think>") :].strip() and answer.strip()


def test_it_lists_only_the_models_in_the_key_scope(client_for):
    _key, raw_key = make_key(allowed_models=["deepseek-v3"])
    client = client_for(raw_key)

    listed = [model.id for model in client.models.list().data]

    assert listed == ["deepseek-v3"]
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="deepseek-r1", messages=QUESTION)
    assert refused.value.code == "model_not_allowed"


def test_it_refuses_a_bad_key_in_the_openai_error_format(client_for):
    _key, raw_key = make_key()
    prefix, _secret = split_key(raw_key)

    with pytest.raises(openai.AuthenticationError) as refused:
        client_for(f"ra-{prefix}-wrong").chat.completions.create(
            model="deepseek-r1", messages=QUESTION
        )

    assert refused.value.code == "invalid_api_key"
    assert refused.value.body["type"] == "authentication_error"
    assert "not valid" in refused.value.body["message"]


def test_it_refuses_an_unknown_model_and_a_bad_body(client_for):
    _key, raw_key = make_key()
    client = client_for(raw_key)

    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-17", messages=QUESTION)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="deepseek-r1", messages=[])

    assert unknown.value.code == "model_not_found"
    assert bad.value.code == "invalid_field" and bad.value.param == "messages"


def test_it_refuses_a_prompt_the_context_cannot_hold_without_sending_it(
    client_for, model_api
):
    _key, raw_key = make_key()
    ModelProfile.ensure("deepseek-v3")
    ModelProfile.objects.filter(name="deepseek-v3").update(input_limit=50)
    long_question = [{"role": "user", "content": "entropy " * 200}]

    with pytest.raises(openai.BadRequestError) as refused:
        client_for(raw_key).chat.completions.create(
            model="deepseek-v3", messages=long_question
        )

    assert refused.value.code == "context_length_exceeded"
    assert "50" in refused.value.body["message"]
    assert model_api.stats["requests"] == 0
    record = UsageRecord.objects.get()
    assert (record.error_code, record.counted_tokens) == ("context_length_exceeded", 0)


def test_it_refuses_a_body_over_the_ceiling_in_the_openai_error_format(
    client_for, model_api, settings
):
    settings.MAX_REQUEST_BYTES = 1024 * 1024
    _key, raw_key = make_key()
    huge_question = [{"role": "user", "content": "entropy " * 150_000}]

    with pytest.raises(openai.APIStatusError) as refused:
        client_for(raw_key).chat.completions.create(
            model="deepseek-v3", messages=huge_question
        )

    assert refused.value.status_code == 413
    assert refused.value.code == "request_too_large"
    assert refused.value.body["type"] == "invalid_request_error"
    assert "larger than 1 MB" in refused.value.body["message"]
    assert model_api.stats["requests"] == 0


def test_it_answers_in_chinese_by_default(api_server, model_api):
    _key, raw_key = make_key()
    client = openai.OpenAI(base_url=f"{api_server}/v1", api_key=raw_key + "x")

    with pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()

    assert "API 密钥" in refused.value.body["message"]


def test_it_passes_embeddings_through_and_meters_them(client_for):
    key, raw_key = make_key()
    ModelProfile.objects.create(
        name="bge-m3",
        context_window=8192,
        input_limit=8192,
        max_output_tokens=1,
    )

    answer = client_for(raw_key).embeddings.create(
        model="bge-m3", input=["entropy", "enthalpy"]
    )

    assert [item.index for item in answer.data] == [0, 1]
    assert len(answer.data[0].embedding) == 8
    assert answer.data[0].embedding != answer.data[1].embedding
    assert answer.usage.prompt_tokens > 0
    record = UsageRecord.objects.get()
    assert (record.api_key, record.end_state, record.model) == (key, "stop", "bge-m3")
    assert record.prompt_tokens == answer.usage.prompt_tokens


def test_a_client_that_leaves_frees_its_slot_and_the_upstream(client_for, model_api):
    _key, raw_key = make_key()
    ModelProfile.ensure("deepseek-v3")
    ModelProfile.objects.filter(name="deepseek-v3").update(concurrency_limit=1)
    client = client_for(raw_key)
    slow = [{"role": "user", "content": "[[sim delay=0.05 words=400]] Go on."}]

    stream = client.chat.completions.create(
        model="deepseek-v3", messages=slow, stream=True
    )
    next(iter(stream))
    stream.close()

    wait_for(lambda: UsageRecord.objects.filter(end_state="stopped").exists())
    wait_for(lambda: model_api.stats["disconnected"] == 1)
    # The single slot is free again: the next request is answered at once.
    answer = client.chat.completions.create(model="deepseek-v3", messages=QUESTION)
    assert answer.choices[0].message.content


def test_it_keeps_a_streamed_client_waiting_in_the_queue(client_for, model_api):
    """A stream that cannot start yet is held open, then answered in full."""
    _key, raw_key = make_key()
    ModelProfile.ensure("deepseek-v3")
    ModelProfile.objects.filter(name="deepseek-v3").update(concurrency_limit=1)
    client = client_for(raw_key)
    first = threading.Thread(
        target=client.chat.completions.create,
        kwargs={
            "model": "deepseek-v3",
            "messages": [{"role": "user", "content": "[[sim delay=0.02 words=60]] A"}],
        },
    )
    first.start()
    wait_for(lambda: model_api.stats["active"] == 1)

    chunks = list(
        client.chat.completions.create(
            model="deepseek-v3", messages=QUESTION, stream=True
        )
    )
    first.join()

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    waited = UsageRecord.objects.order_by("created").last()
    assert waited.queue_ms > 0 and waited.end_state == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_it_passes_a_backend_refusal_on_as_an_openai_error(client_for, stream):
    _key, raw_key = make_key()
    refused_question = [{"role": "user", "content": "[[sim fault=http500]] Hi"}]

    with pytest.raises(openai.APIError) as refused:
        answer = client_for(raw_key).chat.completions.create(
            model="deepseek-v3", messages=refused_question, stream=stream
        )
        if stream:
            list(answer)

    assert "The model service answered" in refused.value.message
    record = UsageRecord.objects.get()
    assert (record.end_state, record.error_code) == ("error", "server_error")


def test_it_ends_a_stream_cut_by_the_backend_with_an_error(client_for):
    _key, raw_key = make_key()
    cut_question = [{"role": "user", "content": "[[sim fault=cut]] Hi"}]

    with pytest.raises(openai.APIError):
        list(
            client_for(raw_key).chat.completions.create(
                model="deepseek-v3", messages=cut_question, stream=True
            )
        )

    assert UsageRecord.objects.get().end_state == "error"
