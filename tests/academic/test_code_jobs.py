"""Code analyses end to end: the part and overview tasks against the model
simulator over real HTTP, what reaches the model and what comes back."""

import re

import pytest

from academic import code_actions, codebase
from academic.code_models import CodeAnalysis, CodePart
from academic.code_tasks import summarise_part, write_overview
from assistant.models import ModelProfile, UsageRecord
from chat.prompt import build_messages, count_text_tokens, estimate_tokens
from tests.academic.codeprojects import greenlet_zip, h11_zip
from tests.factories import make_user, queue_reply

pytestmark = pytest.mark.django_db


def start(data, name="h11.zip", model="deepseek-v3", owner=None):
    code_project = codebase.read_upload(name, data)
    return code_actions.start_analysis(
        owner or make_user(), name, code_project, model, "en"
    )


def run(analysis):
    """Run every part task in this thread, then the overview they queue."""
    for part_id in analysis.parts.values_list("pk", flat=True):
        summarise_part.run(part_id)
    analysis.refresh_from_db()
    if analysis.overview_status == CodeAnalysis.OverviewStatus.RUNNING:
        write_overview.run(analysis.pk)
        analysis.refresh_from_db()
    return analysis


def sent_requests(simulator):
    return [
        body
        for body in simulator.stats["recent_requests"]
        if body.get("messages") and body.get("stream")
    ]


@pytest.fixture
def eager_overview(monkeypatch):
    # The last part queues the overview with .delay(); the test runs it
    # itself, in order, instead of through a broker.
    monkeypatch.setattr(write_overview, "delay", lambda pk: None)


def test_it_summarises_each_h11_file_and_cites_its_lines(model_api, eager_overview):
    analysis = run(start(h11_zip()))

    assert analysis.status == CodeAnalysis.Status.DONE
    assert set(analysis.parts.values_list("status", flat=True)) == {"done"}
    part = analysis.parts.get(file__path="h11/_connection.py", first_line=1)
    connection = next(
        m for m in analysis.project_map["modules"] if m["path"] == "h11/_connection.py"
    )
    keep_alive = next(f for f in connection["functions"] if f["name"] == "_keep_alive")
    # The simulator answers from the prompt: the reference came from the map.
    assert f"`_keep_alive` at `h11/_connection.py:{keep_alive['line']}`" in part.summary


def test_it_sends_numbered_lines_and_the_file_map(model_api, eager_overview):
    analysis = run(start(h11_zip()))

    part = analysis.parts.filter(file__path="h11/_util.py").first()
    sent = next(
        body["messages"][-1]["content"]
        for body in sent_requests(model_api)
        if '<source path="h11/_util.py">' in body["messages"][-1]["content"]
    )
    first_line = part.file.text.split("\n")[0]
    assert f"\n1| {first_line}\n" in sent
    assert "Map of this file:\nh11/_util.py (" in sent
    assert (
        "Cite code as path:line"
        in sent_requests(model_api)[0]["messages"][0]["content"]
    )


def test_it_writes_the_overview_from_the_map_and_summaries(model_api, eager_overview):
    analysis = run(start(greenlet_zip(), name="greenlet.zip"))

    assert analysis.overview_status == CodeAnalysis.OverviewStatus.DONE
    overview_prompt = sent_requests(model_api)[-1]["messages"][-1]["content"]
    assert "Project map:" in overview_prompt
    assert "### greenlet/TGreenlet.cpp:1-" in overview_prompt
    assert "## Architecture" in analysis.overview
    assert "`greenlet/greenlet.cpp:1` imports" in analysis.overview
    assert "summarised: `greenlet/TGreenlet.hpp:1-" in analysis.overview


def test_it_cuts_long_files_into_parts_within_the_budget(model_api, eager_overview):
    profile = ModelProfile.ensure("deepseek-v3")
    profile.context_window = 2048
    profile.input_limit = 1500
    profile.max_output_tokens = 512
    profile.save()
    budget = code_actions.part_budget(profile)

    analysis = run(start(h11_zip()))

    parts = list(analysis.parts.select_related("file"))
    connection = [p for p in parts if p.file.path == "h11/_connection.py"]
    assert len(connection) > 1
    assert connection[0].first_line == 1
    # The file ends with a newline: its last line is the one before it.
    assert connection[-1].last_line == len(connection[0].file.text.splitlines())
    for before, after in zip(connection, connection[1:]):
        assert after.first_line == before.last_line + 1
    for part in parts:
        numbered = "".join(
            f"{n}| {line}\n" for n, line in enumerate(part.lines(), part.first_line)
        )
        assert (
            count_text_tokens(numbered) <= budget or part.first_line == part.last_line
        )
    for body in sent_requests(model_api):
        assert estimate_tokens(body["messages"]) <= profile.input_limit


def test_it_meters_every_request_as_code_analysis(model_api, eager_overview):
    analysis = run(start(greenlet_zip(), name="greenlet.zip"))

    records = UsageRecord.objects.filter(user=analysis.owner)
    assert records.count() == analysis.parts.count() + 1
    assert set(records.values_list("kind", flat=True)) == {"code"}
    assert set(records.values_list("end_state", flat=True)) == {"stop"}


def test_it_cancels_the_parts_not_yet_done(model_api, eager_overview):
    analysis = start(h11_zip())

    code_actions.cancel_analysis(analysis)
    analysis = run(analysis)

    assert analysis.status == CodeAnalysis.Status.CANCELLED
    assert set(analysis.parts.values_list("failure_code", flat=True)) == {"cancelled"}
    assert analysis.overview_failure == "cancelled"
    assert sent_requests(model_api) == []


def test_it_opens_a_conversation_that_knows_the_map(model_api, eager_overview):
    analysis = run(start(h11_zip()))

    conversation = code_actions.open_conversation(analysis)
    _question, reply = queue_reply(conversation, "Where is _keep_alive defined?")
    messages = build_messages(conversation, reply)

    assert messages[0]["role"] == "system"
    assert re.search(
        r"function _keep_alive h11/_connection.py:\d+", messages[0]["content"]
    )
    assert "Overview written earlier:" in messages[0]["content"]
    profile = ModelProfile.ensure(analysis.model)
    assert estimate_tokens(messages[:1]) <= profile.input_limit
    assert code_actions.open_conversation(analysis) == conversation


def test_it_summarises_only_what_an_empty_file_leaves(model_api, eager_overview):
    analysis = run(start(b"\n\n", name="empty.py"))

    assert analysis.parts.count() == 0
    assert analysis.overview_status == CodeAnalysis.OverviewStatus.DONE


def test_a_part_left_by_a_duplicate_delivery_is_skipped(model_api, eager_overview):
    analysis = start(b"def f():\n    return 1\n", name="f.py")
    part = analysis.parts.get()
    part.finish("already written")

    summarise_part.run(part.pk)

    part.refresh_from_db()
    assert part.summary == "already written"
    assert sent_requests(model_api) == []
    assert CodePart.objects.count() == 1
