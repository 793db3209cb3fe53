"""Polish chunks, conversions and titles are metered and bounded like chat."""

import pytest

from academic.generation import keep_reason
from academic.models import Conversion, PolishChunk
from academic.tasks import convert_image
from assistant.models import Quota, UsageRecord
from chat import titling
from tests.academic.jobs import run, start
from tests.academic.test_convert import make_conversion
from tests.factories import add_exchange, make_conversation, make_user

pytestmark = pytest.mark.django_db


def test_it_records_each_polished_chunk_as_polish_work(model_api):
    user = make_user()

    job = run(start(user, b"A sentence that need polish. Another one are here."))

    records = UsageRecord.objects.filter(user=user)
    assert job.chunks.count() == records.count() > 0
    assert set(records.values_list("kind", "end_state")) == {("polish", "stop")}
    assert all(record.completion_tokens for record in records)


def test_it_keeps_a_chunk_unchanged_when_the_quota_is_used_up(model_api):
    user = make_user()
    Quota.objects.create(user=user, daily_tokens=1)
    job = run(start(user, b"A sentence that need polish."))

    chunk = job.chunks.get()
    assert chunk.status == PolishChunk.Status.KEPT
    assert chunk.failure_code == "quota_daily"
    assert "配额已用完" in str(keep_reason(chunk.failure_code))
    assert model_api.stats["requests"] == 0
    record = UsageRecord.objects.get(user=user)
    assert (record.end_state, record.error_code, record.counted_tokens) == (
        "error",
        "quota_daily",
        0,
    )


def test_it_records_a_conversion_and_refuses_one_over_quota(model_api, shared_dir):
    conversion = make_conversion(shared_dir)
    convert_image(conversion.pk)
    over = make_conversion(shared_dir, owner=make_user("over-quota"))
    Quota.objects.create(user=over.owner, daily_tokens=10)

    convert_image(over.pk)

    done = UsageRecord.objects.get(user=conversion.owner)
    assert (done.kind, done.end_state) == ("convert", "stop")
    assert done.completion_tokens and done.duration_ms is not None
    over.refresh_from_db()
    assert over.status == Conversion.Status.ERROR
    assert "配额已用完" in str(over.error_message)
    assert model_api.stats["requests"] == 1


def test_it_records_a_title_request_as_chat(model_api):
    conversation = make_conversation(make_user())
    add_exchange(conversation, "What is entropy?", "A measure of disorder.")

    titling.retitle(conversation.pk)

    record = UsageRecord.objects.get(user=conversation.user)
    assert (record.kind, record.model, record.end_state) == (
        "chat",
        "deepseek-v3",
        "stop",
    )
