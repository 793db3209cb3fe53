"""The log line an on-call engineer reads for each model request."""

import json
import logging
import re

import pytest

from assistant.logformat import JSONFormatter
from chat.tasks import generate_reply
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db

QUESTION = "Which enzyme unwinds the double helix in replication?"
API_KEY = "sk-test-0123456789abcdef"


def test_it_logs_one_line_per_request_with_its_figures_and_no_text(
    model_api, settings, caplog
):
    settings.MODEL_API_KEY = API_KEY
    user = make_user()
    conversation = make_conversation(user, model="deepseek-r1")
    _, reply = queue_reply(conversation, QUESTION)

    with caplog.at_level(logging.INFO):
        generate_reply(reply.pk)

    reply.refresh_from_db()
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    requests = [line for line in lines if line.startswith("model request ")]
    assert len(requests) == 1
    fields = dict(re.findall(r"(\w+)=(\S+)", requests[0]))
    assert fields["user"] == str(user.pk)
    assert fields["model"] == "deepseek-r1"
    assert fields["backend"] == f"default@127.0.0.1:{model_api.port}"
    assert fields["end"] == "stop"
    assert fields["completion_tokens"] == str(reply.completion_tokens)
    assert fields["queue_ms"].isdigit() and fields["duration_ms"].isdigit()

    logged = "\n".join(lines)
    assert API_KEY not in logged
    assert QUESTION not in logged and "double helix" not in logged
    assert reply.content[:40] not in logged
    assert reply.reasoning[:40] not in logged


def test_it_formats_a_record_as_one_json_line():
    record = logging.LogRecord(
        "assistant.metering",
        logging.INFO,
        __file__,
        1,
        "model request user=%s",
        (7,),
        None,
    )

    line = JSONFormatter().format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "model request user=7"
    assert entry["level"] == "INFO" and entry["logger"] == "assistant.metering"
