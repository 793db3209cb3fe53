"""Polish jobs end to end: the chunk tasks against the model simulator over
real HTTP, the checks on what comes back, and the review's merge."""

import time

import pytest
from django.core.cache import cache

from academic import actions
from academic.checks import environment_markers, keyed_commands
from academic.chunking import split_into_chunks
from academic.encoding import decode_bytes, encode_text
from academic.models import ChangeDecision, PolishChunk, PolishJob
from academic.placeholders import PLACEHOLDER_PATTERN
from assistant.models import ModelProfile
from chat.prompt import count_text_tokens
from tests.academic.jobs import case_bytes, run, start
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def download(job, as_utf8=False):
    source = job.files.get().decoded_source()
    return encode_text(job.merged_text(), source, as_utf8=as_utf8)


def chat_requests(simulator):
    return [
        body
        for body in simulator.stats["recent_requests"]
        if body.get("messages") and body.get("stream")
    ]


def test_it_polishes_c01_and_keeps_macros_comments_and_escapes(model_api, shared_dir):
    source = case_bytes(shared_dir, "c01_custom_macros.tex")

    job = run(start(make_user(), source))

    assert job.status == PolishJob.Status.DONE
    assert set(job.chunks.values_list("status", flat=True)) == {"done"}
    (chunk,) = job.chunks.all()
    assert chunk.attempts == 1 and chunk.completion_tokens > 0
    polished = job.merged_text(accept_all=True)
    assert "a wide margin" in polished and "Moreover, we ran" in polished
    assert polished.count(" % reviewer 2 asked for this\n\\revise{") == 1
    assert "% TODO(author): rerun seed 3 before submission\n" in polished
    assert polished.count("40\\%") == 1
    for macro in ("\\hl{", "\\revise{", "\\emph{", "\\cite{chen2022a}"):
        assert polished.count(macro) == source.decode().count(macro) > 0
    assert encode_text(
        job.merged_text(accept_all=False), job.files.get().decoded_source()
    ) == (source)


def test_it_sends_prose_only_and_the_protected_parts_as_placeholders(
    model_api, shared_dir
):
    run(start(make_user(), case_bytes(shared_dir, "c01_custom_macros.tex")))

    sent = chat_requests(model_api)[-1]["messages"][-1]["content"]

    assert "\\cite" not in sent and "\\newcommand" not in sent and "%" not in sent
    assert "reduces the error by a large margin" in sent
    assert len(PLACEHOLDER_PATTERN.findall(sent)) == 12


def test_it_cuts_the_long_c05_paragraph_at_commas_and_loses_nothing(
    model_api, shared_dir
):
    """c05: the 5,500-character paragraph has only "，" to cut at."""
    source = case_bytes(shared_dir, "c05_long_block.tex")
    profile = ModelProfile.ensure("deepseek-r1")
    budget = actions.chunk_budget(profile, PolishJob.Task.POLISH)

    job = run(start(make_user(), source, model="deepseek-r1"))

    chunks = list(job.chunks.all())
    assert len(chunks) > 4
    for chunk in chunks:
        assert chunk.status == PolishChunk.Status.DONE, chunk.failure_detail
        single_placeholder = PLACEHOLDER_PATTERN.fullmatch(chunk.masked_text.strip())
        assert count_text_tokens(chunk.masked_text) <= budget or single_placeholder
    cut_inside_paragraph = [c for c in chunks[1:-1] if "\n\n" not in c.original_text]
    assert cut_inside_paragraph
    assert all(c.original_text.endswith("，") for c in cut_inside_paragraph[:-1])
    author_line = source.decode().splitlines()[2]
    assert author_line.startswith("\\author{")
    polished = job.merged_text(accept_all=True)
    assert author_line in polished
    assert abs(len(polished) - len(source.decode())) < 0.02 * len(polished)
    actions.decide_all(job, False)
    assert download(job) == source


def test_it_keeps_every_key_list_and_formula_of_c07(model_api, shared_dir):
    source = case_bytes(shared_dir, "c07_cite_keys.tex")

    job = run(start(make_user(), source, task=PolishJob.Task.GRAMMAR))

    result = job.merged_text(accept_all=True)
    assert job.status == PolishJob.Status.DONE
    assert keyed_commands(result) == keyed_commands(source.decode())
    assert "$\\mathcal{D}_{\\mathrm{train}}$" in result
    assert "\\citep[见][第3节]{Zhao:2018}" in result


def test_it_marks_chinese_changes_word_by_word_c09(model_api, shared_dir):
    source = case_bytes(shared_dir, "c09_cjk_diff_before.tex")

    job = run(start(make_user(), source))

    (chunk,) = job.chunks.all()
    changes = chunk.changes()
    assert [(c.original, c.replacement) for c in changes] == [("了", ""), ("较", "更")]
    actions.decide(chunk, 0, False)
    merged = job.merged_text()
    assert "提出了一种" in merged and "更好的效果" in merged
    assert download(job) == source.replace("较好".encode(), "更好".encode())


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        ("key", "keys"),
        ("brace", "braces"),
        ("placeholder", "placeholder_missing"),
        ("environment", "environments"),
    ],
)
def test_it_catches_each_kind_of_damage_and_keeps_the_original(
    model_api, shared_dir, damage, code
):
    """The simulator damages every answer; the retry is told why, then the
    chunk keeps its original text and says why instead of pasting an error."""
    source = case_bytes(shared_dir, "c01_custom_macros.tex")

    job = run(start(make_user(), source, glossary=f"[[sim damage={damage}]]"))

    (chunk,) = job.chunks.all()
    assert chunk.status == PolishChunk.Status.KEPT
    assert chunk.failure_code == code
    assert chunk.attempts == 2
    assert chunk.prompt_tokens > 0 and chunk.completion_tokens > 0
    assert job.status == PolishJob.Status.DONE
    assert download(job) == source
    assert encode_text(
        job.merged_text(accept_all=True), job.files.get().decoded_source()
    ) == (source)
    first, retry = chat_requests(model_api)[-2:]
    assert "rejected" not in first["messages"][-1]["content"]
    assert code.replace("_", " ") in retry["messages"][-1]["content"]


def test_it_gives_the_models_text_on_accept_all_and_the_original_on_reject_all(
    model_api, shared_dir
):
    source = case_bytes(shared_dir, "c01_custom_macros.tex")
    job = run(start(make_user(), source))
    (chunk,) = job.chunks.all()
    actions.decide(chunk, 1, False)

    actions.decide_all(job, True)
    accepted = download(job)
    actions.decide_all(job, False)
    rejected = download(job)

    assert accepted == chunk.result_text.encode()
    assert rejected == source


def test_it_writes_a_gbk_file_with_crlf_back_the_same_way(model_api, shared_dir):
    text = case_bytes(shared_dir, "c09_cjk_diff_before.tex").decode()
    text += "\n这是一个非常重要的结果。\n"
    source = text.replace("\n", "\r\n").encode("gbk")
    assert decode_bytes(source).encoding == "gb18030"

    job = run(start(make_user(), source, name="论文.tex"))

    actions.decide_all(job, False)
    assert download(job) == source
    actions.decide_all(job, True)
    result = download(job)
    assert result.decode("gbk") == (
        text.replace("较好", "更好")
        .replace("提出了", "提出")
        .replace("非常", "十分")
        .replace("\n", "\r\n")
    )
    assert download(job, as_utf8=True) == result.decode("gbk").encode("utf-8")


def test_it_keeps_the_review_after_a_reload(model_api, shared_dir):
    source = case_bytes(shared_dir, "c01_custom_macros.tex")
    job = run(start(make_user(), source))
    (chunk,) = job.chunks.all()
    actions.decide(chunk, 0, False)
    actions.decide(chunk, 2, False)
    actions.decide(chunk, 2, True)
    before = job.merged_text()

    reloaded = PolishJob.objects.get(pk=job.pk)

    assert reloaded.merged_text() == before
    assert reloaded.decisions_by_chunk() == {chunk.pk: {0: False, 2: True}}
    assert ChangeDecision.objects.count() == 2
    assert "a large margin" in before and "Moreover" in before


def test_it_answers_a_chunk_of_only_protected_parts_without_the_model(model_api):
    source = b"\\begin{equation}\nE = mc^2\n\\end{equation}\n"

    job = run(start(make_user(), source))

    assert job.status == PolishJob.Status.DONE
    assert model_api.stats["requests"] == 0
    assert download(job) == source


def test_it_shows_a_model_service_failure_as_a_kept_chunk(model_api, shared_dir):
    source = case_bytes(shared_dir, "c01_custom_macros.tex")

    job = run(start(make_user(), source, glossary="[[sim fault=http500]]"))

    (chunk,) = job.chunks.all()
    assert chunk.status == PolishChunk.Status.KEPT
    assert chunk.failure_code == "server_error"
    assert download(job) == source


def test_it_chunks_within_the_output_limit_of_a_small_model():
    profile = ModelProfile(
        name="small",
        is_reasoning=False,
        context_window=2048,
        input_limit=1024,
        max_output_tokens=300,
    )

    budget = actions.chunk_budget(profile, PolishJob.Task.TRANSLATE_EN_ZH)

    assert budget <= 300 / 1.6
    text = "A sentence of about ten words goes here, and more. " * 200
    assert all(
        count_text_tokens(chunk) <= budget for chunk in split_into_chunks(text, budget)
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_it_runs_chunks_side_by_side_through_the_worker(model_api, shared_dir):
    source = case_bytes(shared_dir, "c05_long_block.tex")
    profile = ModelProfile.ensure("deepseek-v3")
    profile.concurrency_limit = 3
    profile.save(update_fields=["concurrency_limit"])

    job = start(make_user(), source, glossary="[[sim delay=0.01]]")
    job = _wait_until_finished(job)

    assert job.status == PolishJob.Status.DONE
    stats = model_api.stats
    assert 1 < stats["max_active"] <= 3, stats["max_active"]
    assert job.merged_text(accept_all=False) == source.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("celery_worker")
def test_it_cancels_a_running_job(model_api, shared_dir):
    source = case_bytes(shared_dir, "c05_long_block.tex")
    profile = ModelProfile.ensure("deepseek-v3")
    profile.concurrency_limit = 1
    profile.save(update_fields=["concurrency_limit"])
    job = start(make_user(), source, glossary="[[sim delay=0.2]]")
    _wait_for(lambda: model_api.stats["active"] > 0)

    actions.cancel_job(job)
    job = _wait_until_finished(job)

    statuses = set(job.chunks.values_list("status", "failure_code"))
    assert job.status == PolishJob.Status.CANCELLED
    assert statuses <= {("kept", "cancelled"), ("done", "")}
    assert ("kept", "cancelled") in statuses
    _wait_for(lambda: model_api.stats["active"] == 0)
    assert job.merged_text(accept_all=False) == source.decode()
    cache.delete(job.stop_key)


def _wait_until_finished(job, seconds=60):
    # The last chunk's task also runs the compile check before the job is
    # marked finished, so both are waited for.
    def finished():
        chunks_done = not job.chunks.exclude(
            status__in=PolishChunk.FINISHED_STATUSES
        ).exists()
        return (
            chunks_done
            and not PolishJob.objects.filter(
                pk=job.pk, status=PolishJob.Status.RUNNING
            ).exists()
        )

    _wait_for(finished, seconds)
    job.refresh_from_db()
    return job


def _wait_for(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail("condition not met in time")


def test_it_keeps_environment_markers_out_of_the_prompt(model_api, shared_dir):
    source = case_bytes(shared_dir, "c01_custom_macros.tex")

    job = run(start(make_user(), source))

    assert environment_markers(job.merged_text(accept_all=True)) == (
        environment_markers(source.decode())
    )


def test_it_waits_out_a_busy_server_and_then_polishes(model_api, shared_dir):
    source = case_bytes(shared_dir, "c09_cjk_diff_before.tex")

    job = run(start(make_user(), source, glossary="[[sim fault=http429 fails=1]]"))

    (chunk,) = job.chunks.all()
    assert chunk.status == PolishChunk.Status.DONE
    assert "更好" in chunk.result_text
    assert model_api.stats["rejected"] == 1


def test_it_protects_code_and_link_targets_in_markdown(model_api):
    source = (
        b"# Results\n\nIn addition, the cache is very fast "
        b"([details](https://example.org/a_very_long-path)).\n\n"
        b"```python\nin addition = 1  # In addition, this stays\n```\n"
    )

    job = run(start(make_user(), source, name="notes.md", kind="markdown"))

    result = job.merged_text(accept_all=True)
    assert "Moreover, the cache is fast" in result
    assert "](https://example.org/a_very_long-path)" in result
    assert "```python\nin addition = 1  # In addition, this stays\n```\n" in result
    sent = chat_requests(model_api)[-1]["messages"][-1]["content"]
    assert "example.org" not in sent and "in addition = 1" not in sent


@pytest.mark.parametrize(
    ("task", "words"),
    [
        (
            PolishJob.Task.TRANSLATE_ZH_EN,
            "Chinese text between <text> and </text> into",
        ),
        (PolishJob.Task.TRANSLATE_EN_ZH, "into fluent academic Simplified Chinese"),
        (PolishJob.Task.GRAMMAR, "with the smallest edits possible"),
    ],
)
def test_it_asks_for_the_chosen_task_with_the_glossary(model_api, task, words):
    run(
        start(
            make_user(),
            "注意力机制很有效。".encode(),
            task=task,
            glossary="注意力 = attention",
        )
    )

    system, user = chat_requests(model_api)[-1]["messages"]
    assert words in system["content"]
    assert "注意力 = attention" in user["content"]
    assert user["content"].endswith("<text>\n注意力机制很有效。\n</text>")


def test_it_uses_the_retry_when_the_model_heeds_the_reason(model_api, shared_dir):
    source = case_bytes(shared_dir, "c01_custom_macros.tex")

    job = run(start(make_user(), source, glossary="[[sim damage=key_once]]"))

    (chunk,) = job.chunks.all()
    assert chunk.status == PolishChunk.Status.DONE
    assert chunk.attempts == 2
    assert "Moreover" in chunk.result_text and "smith2020" not in chunk.result_text
    assert keyed_commands(chunk.result_text) == keyed_commands(source.decode())


def test_it_polishes_an_abstract_given_as_a_command_c06(model_api, shared_dir):
    source = case_bytes(shared_dir, "c06_abstract_cmd.tex")

    job = run(start(make_user(), source))

    result = job.merged_text(accept_all=True)
    assert job.status == PolishJob.Status.DONE
    assert "\\abstract{We present a lightweight detector" in result
    assert "Small objects are hard to detect" in result
    assert "\\keywords{object detection, aerial imagery, attention}" in result
    assert keyed_commands(result) == keyed_commands(source.decode())
    assert result.splitlines()[:2] == source.decode().splitlines()[:2]


def test_it_polishes_footnotes_and_captions_and_keeps_their_label_and_ref_keys(
    model_api,
):
    """The prose inside \\caption{} and \\footnote{} goes to the model and
    comes back edited; the \\label and \\ref keys in it never leave."""
    source = (
        "\\begin{figure}\n\\centering\n\\includegraphics{errors}\n"
        "\\caption{In addition, the method shows that a lot of errors vanish."
        "\\label{fig:errors}}\n\\end{figure}\n\n"
        "As Figure~\\ref{fig:errors} shows, the grid is fine.\\footnote{In "
        "addition, we run a big grid, see Section~\\ref{sec:grid}.}\n"
    )

    job = run(start(make_user(), source.encode(), name="part.tex"))

    prompts = [body["messages"][-1]["content"] for body in chat_requests(model_api)]
    sent = "\n".join(prompts)
    assert "the method shows that a lot of errors vanish." in sent
    assert "we run a big grid, see Section" in sent
    assert "fig:errors" not in sent and "sec:grid" not in sent
    result = job.merged_text(accept_all=True)
    assert (
        "\\caption{Moreover, the method demonstrates that many errors vanish."
        "\\label{fig:errors}}" in result
    )
    footnote = "\\footnote{Moreover, we ran a large grid, see Section~\\ref{sec:grid}.}"
    assert footnote in result
    assert "As Figure~\\ref{fig:errors} shows" in result
    assert keyed_commands(result) == keyed_commands(source)


@pytest.mark.django_db
def test_a_chunk_that_finishes_as_its_job_is_cancelled_keeps_no_reason(model_api):
    """The cancel marks the rows; the worker still holds the chunk it read."""
    job = start(make_user(), b"The results is good.\n")
    chunk = job.chunks.get()

    actions.cancel_job(job)
    chunk.finish("The results are good.\n")

    chunk.refresh_from_db()
    assert (chunk.status, chunk.failure_code) == (PolishChunk.Status.DONE, "")
