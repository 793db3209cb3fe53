import copy
import json
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.streaming import (
    EventKind,
    ReplyParser,
    ReplyStatus,
    SSEComment,
    SSEEvent,
    Usage,
    iter_reply_events,
    iter_sse,
)
from tests.conftest import SHARED_DIR

CASES_FILE = "stream-cases/cases.jsonl"
DONE = "[DONE]"
REASONING_FIELDS = ("reasoning_content", "reasoning")
TEXT_FIELDS = ("content", *REASONING_FIELDS)


def _case_ids(framing=None):
    """Case ids for parametrising, read when the tests are collected.

    Without the shared folder a single placeholder id remains, so the
    shared_dir fixture decides between skipping and failing.
    """
    cases_path = SHARED_DIR / CASES_FILE
    if not cases_path.is_file():
        return ["shared-material-missing"]

    cases = _read_cases(cases_path)
    return [case["id"] for case in cases if framing in (None, case["framing"])]


def _read_cases(cases_path):
    lines = cases_path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="session")
def stream_cases(shared_dir):
    return {case["id"]: case for case in _read_cases(shared_dir / CASES_FILE)}


def _parser_for(case):
    profile = case.get("profile") or {}
    return ReplyParser(starts_in_reasoning=profile.get("starts_in_reasoning", False))


def _replay(events):
    """Rebuild reasoning and answer the way a caller applies the events."""
    reasoning, answer = "", ""
    for event in events:
        if event.kind is EventKind.REASONING:
            reasoning += event.text
        elif event.kind is EventKind.ANSWER:
            answer += event.text
        elif event.kind is EventKind.RECLASSIFY:
            assert event.text == answer
            reasoning, answer = reasoning + answer, ""
    return reasoning, answer


def _assert_meets_expectation(case, parser, events):
    expected = case["expect"]
    assert parser.reasoning.strip() == expected["reasoning"]
    assert parser.answer.strip() == expected["answer"]
    assert parser.status == expected["status"]
    if "usage" in expected:
        expected_usage = expected["usage"]
        assert parser.usage == (expected_usage and Usage(**expected_usage))

    assert _replay(events) == (parser.reasoning, parser.answer)
    assert [event.kind for event in events].count(EventKind.END) == 1
    assert events[-1].kind is EventKind.END
    assert events[-1].status == parser.status
    assert all(event.text for event in events if event.kind in _TEXT_KINDS)


_TEXT_KINDS = (EventKind.REASONING, EventKind.ANSWER, EventKind.RECLASSIFY)


def _run_chunks(case, chunks):
    """Feed decoded chunks (and "[DONE]") the way a connection delivers them."""
    parser = _parser_for(case)
    events = []
    for chunk in chunks:
        events += parser.feed_done() if chunk == DONE else parser.feed(chunk)
    events += parser.close()
    return parser, events


def _data_chunks(case):
    return [event if event == DONE else json.loads(event) for event in case["events"]]


def _delta(chunk):
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    return choices[0].get("delta") or {} if choices else {}


def _text_runs(chunk):
    """The chunk's text as (fields, text) runs: reasoning first, then content.

    Mirrored reasoning fields form one run, cut at the same places.
    """
    delta = _delta(chunk)
    runs = []
    reasoning_fields = tuple(field for field in REASONING_FIELDS if delta.get(field))
    if reasoning_fields:
        runs.append((reasoning_fields, delta[reasoning_fields[0]]))
    if delta.get("content"):
        runs.append((("content",), delta["content"]))
    return runs


def _total_text_length(chunks):
    return sum(len(text) for chunk in chunks for _, text in _text_runs(chunk))


def _piece_of(chunk, fields, text, is_last):
    """A copy of chunk carrying only `text`; the end markers stay on the last."""
    piece = copy.deepcopy(chunk)
    choice = piece["choices"][0]
    delta = choice["delta"]
    for field in TEXT_FIELDS:
        if delta.get(field):
            del delta[field]
    delta.update(dict.fromkeys(fields, text))

    if not is_last:
        choice.pop("finish_reason", None)
        piece.pop("usage", None)
        piece.pop("error", None)
    return piece


def _split(text, cuts):
    bounds = [0, *sorted(cuts), len(text)]
    return [text[start:end] for start, end in pairwise(bounds)]


def _recut(chunks, cuts):
    """Cut the chunks' text at offsets into the concatenation of all of it."""
    recut = []
    offset = 0
    for chunk in chunks:
        runs = _text_runs(chunk)
        if not runs:
            recut.append(chunk)
            continue

        pieces = []
        for fields, text in runs:
            local_cuts = [cut - offset for cut in cuts if 0 < cut - offset < len(text)]
            pieces += [(fields, part) for part in _split(text, local_cuts)]
            offset += len(text)

        last = len(pieces) - 1
        for number, (fields, part) in enumerate(pieces):
            recut.append(_piece_of(chunk, fields, part, number == last))
    return recut


def _has_end_marker(chunk):
    choice = chunk["choices"][0] if chunk.get("choices") else {}
    return bool(choice.get("finish_reason") or chunk.get("usage") or "error" in chunk)


def _can_merge(earlier, later):
    if DONE in (earlier, later) or _has_end_marker(earlier):
        return False

    earlier_runs, later_runs = _text_runs(earlier), _text_runs(later)
    return (
        len(earlier_runs) == len(later_runs) == 1
        and earlier_runs[0][0] == later_runs[0][0]
    )


def _merge(earlier, later):
    merged = copy.deepcopy(earlier)
    (fields, text), (_, later_text) = _text_runs(earlier)[0], _text_runs(later)[0]
    merged["choices"][0]["delta"].update(dict.fromkeys(fields, text + later_text))

    later_choice = later["choices"][0]
    if "finish_reason" in later_choice:
        merged["choices"][0]["finish_reason"] = later_choice["finish_reason"]
    for key in ("usage", "error"):
        if key in later:
            merged[key] = later[key]
    return merged


def _fewest_chunks(chunks):
    merged = []
    for chunk in chunks:
        if merged and _can_merge(merged[-1], chunk):
            merged[-1] = _merge(merged[-1], chunk)
        else:
            merged.append(chunk)
    return merged


@pytest.mark.parametrize("case_id", _case_ids())
def test_it_reads_each_stream_case(stream_cases, case_id):
    case = stream_cases[case_id]
    parser = _parser_for(case)
    if case["framing"] == "raw":
        sse_items = iter_sse(case["events"])
    else:
        sse_items = (SSEEvent(data) for data in case["events"])

    events = list(iter_reply_events(sse_items, parser))

    _assert_meets_expectation(case, parser, events)


@pytest.mark.parametrize("case_id", _case_ids(framing="data"))
def test_it_reads_one_character_per_chunk(stream_cases, case_id):
    case = stream_cases[case_id]
    chunks = _data_chunks(case)
    every_offset = range(1, _total_text_length(chunks))

    parser, events = _run_chunks(case, _recut(chunks, every_offset))

    _assert_meets_expectation(case, parser, events)


@pytest.mark.parametrize("case_id", _case_ids(framing="data"))
def test_it_reads_the_fewest_chunks(stream_cases, case_id):
    case = stream_cases[case_id]
    chunks = _data_chunks(case)

    parser, events = _run_chunks(case, _fewest_chunks(chunks))

    _assert_meets_expectation(case, parser, events)


@pytest.mark.parametrize("case_id", _case_ids(framing="data"))
@settings(max_examples=50, deadline=None, database=None)
@given(data=st.data())
def test_it_reads_random_cuts(stream_cases, case_id, data):
    case = stream_cases[case_id]
    chunks = _data_chunks(case)
    total = _total_text_length(chunks)
    cuts = data.draw(st.sets(st.integers(min_value=1, max_value=max(1, total - 1))))

    parser, events = _run_chunks(case, _recut(chunks, cuts))

    _assert_meets_expectation(case, parser, events)


# iter_sse


def test_it_yields_comments():
    items = list(iter_sse([": OPENROUTER PROCESSING", "", ":keep-alive", ""]))

    assert items == [SSEComment("OPENROUTER PROCESSING"), SSEComment("keep-alive")]


def test_it_reads_data_with_or_without_the_space():
    items = list(iter_sse(["data:{}", "", "data: []", "", "data:  x", ""]))

    assert [item.data for item in items] == ["{}", "[]", " x"]


def test_it_joins_data_lines():
    items = list(iter_sse(["data: one", "data:", "data: three", ""]))

    assert items == [SSEEvent("one\n\nthree")]


def test_it_does_not_dispatch_id_only_events():
    """An id-only event yields nothing; the id is kept for the next event."""
    items = list(iter_sse(["id: 7", "", "event: chunk", "data: x", ""]))

    assert items == [SSEEvent("x", event="chunk", id="7")]


def test_it_strips_carriage_returns():
    items = list(iter_sse([": ping\r", "data: x\r", "\r", "data: y\r\n", "\n"]))

    assert items == [SSEComment("ping"), SSEEvent("x"), SSEEvent("y")]


def test_it_dispatches_the_last_event_at_eof_without_a_blank_line():
    items = list(iter_sse(["data: x", "", "data: [DONE]"]))

    assert items == [SSEEvent("x"), SSEEvent("[DONE]")]


def test_it_ignores_unknown_fields_and_a_byte_order_mark():
    items = list(iter_sse(["\ufeffdata: x", "retry: 10", "foo: bar", ""]))

    assert items == [SSEEvent("x")]


# ReplyParser


def _chunk(content=None, reasoning=None, finish_reason=None, **extra):
    delta = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {"choices": [choice], **extra}


def _feed_all(parser, chunks):
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def _kinds(events):
    return [event.kind for event in events]


def test_it_keeps_text_before_a_vllm_error():
    parser = ReplyParser()
    error = {
        "message": "context limit exceeded",
        "type": "BadRequestError",
        "code": 400,
    }

    events = _feed_all(parser, [_chunk("Partial answer"), {"error": error}])
    events += parser.feed_done()

    assert parser.answer == "Partial answer"
    assert parser.status == ReplyStatus.ERROR
    assert parser.error.message == "context limit exceeded"
    assert parser.error.code == 400
    assert parser.error.type == "BadRequestError"
    assert _kinds(events) == [EventKind.ANSWER, EventKind.ERROR, EventKind.END]


def test_it_reads_an_openrouter_error_finish():
    parser = ReplyParser()
    error = {"code": "server_error", "message": "Provider disconnected"}
    error_chunk = _chunk("", finish_reason="error", error=error)

    _feed_all(parser, [_chunk("Some text"), error_chunk])
    parser.close()

    assert parser.answer == "Some text"
    assert parser.status == ReplyStatus.ERROR
    assert parser.finish_reason == "error"
    assert parser.error.message == "Provider disconnected"
    assert parser.error.code == "server_error"


def test_it_gives_an_error_finish_without_an_error_object_a_message():
    parser = ReplyParser()

    _feed_all(parser, [_chunk("Some text", finish_reason="error")])

    assert parser.status == ReplyStatus.ERROR
    assert parser.error.message


def test_it_turns_invalid_json_into_an_error():
    parser = ReplyParser()
    sse_items = iter_sse(
        ["data: " + json.dumps(_chunk("Hello")), "", "data: {oops", ""]
    )

    events = list(iter_reply_events(sse_items, parser))

    assert parser.answer == "Hello"
    assert parser.status == ReplyStatus.ERROR
    assert "not valid JSON" in parser.error.message
    assert events[-1].kind is EventKind.END
    assert events[-1].status == ReplyStatus.ERROR


def test_it_emits_reclassify_for_a_bare_closer():
    parser = ReplyParser()
    chunks = [_chunk("Let me think."), _chunk("</think>\n\nDone."), _chunk("")]

    events = _feed_all(parser, chunks)

    assert _kinds(events) == [
        EventKind.ANSWER,
        EventKind.RECLASSIFY,
        EventKind.ANSWER,
    ]
    assert events[1].text == "Let me think."
    assert parser.reasoning == "Let me think."
    assert parser.answer == "Done."


def test_it_reclassifies_only_the_first_bare_closer():
    parser = ReplyParser()

    _feed_all(parser, [_chunk("a</think>b</think>c", finish_reason="stop")])

    assert parser.reasoning == "a"
    assert parser.answer == "b</think>c"


def test_it_opens_reasoning_with_a_split_opener():
    parser = ReplyParser()

    events = _feed_all(parser, [_chunk("<th"), _chunk("ink>Hmm.</think>Yes.")])

    assert _kinds(events) == [EventKind.REASONING, EventKind.ANSWER]
    assert parser.reasoning == "Hmm."
    assert parser.answer == "Yes."


def test_it_finds_a_closer_split_across_three_chunks():
    parser = ReplyParser()
    chunks = [_chunk("<think>Hmm.</th"), _chunk("in"), _chunk("k>Yes.")]

    _feed_all(parser, chunks)

    assert parser.reasoning == "Hmm."
    assert parser.answer == "Yes."


def test_it_holds_back_only_a_possible_tag():
    """Text streams out at once, except an end that may start a tag."""
    parser = ReplyParser()

    first = parser.feed(_chunk("<think>Compare 9.11 </th"))
    second = parser.feed(_chunk("ought"))

    assert [event.text for event in first] == ["Compare 9.11 "]
    assert [event.text for event in second] == ["</thought"]


def test_it_keeps_a_think_tag_in_the_answer_as_text():
    parser = ReplyParser()

    _feed_all(parser, [_chunk("Use <think> tags.", finish_reason="stop")])

    assert parser.reasoning == ""
    assert parser.answer == "Use <think> tags."


def test_it_flushes_a_partial_opener_at_the_end():
    parser = ReplyParser()

    parser.feed(_chunk("<th"))
    events = parser.feed_done()

    assert parser.answer == "<th"
    assert _kinds(events) == [EventKind.ANSWER, EventKind.END]


def test_it_ignores_the_profile_when_reasoning_has_a_field():
    parser = ReplyParser(starts_in_reasoning=True)
    chunks = [_chunk(reasoning="Think."), _chunk("Answer.", finish_reason="stop")]

    _feed_all(parser, chunks)

    assert parser.reasoning == "Think."
    assert parser.answer == "Answer."
    assert parser.status == ReplyStatus.STOP


def test_it_prefers_reasoning_content_over_reasoning():
    parser = ReplyParser()
    chunk = _chunk(reasoning="First.")
    chunk["choices"][0]["delta"]["reasoning"] = "Second."

    parser.feed(chunk)

    assert parser.reasoning == "First."


def test_it_ignores_other_choices():
    parser = ReplyParser()
    chunk = _chunk("Zero.")
    chunk["choices"].insert(0, {"index": 1, "delta": {"content": "One."}})

    parser.feed(chunk)

    assert parser.answer == "Zero."


def test_it_records_zero_reasoning_tokens_with_reasoning_as_unknown():
    parser = ReplyParser()
    usage = {"prompt_tokens": 5, "completion_tokens": 9, "reasoning_tokens": 0}

    _feed_all(parser, [_chunk(reasoning="Think."), {"choices": [], "usage": usage}])

    assert parser.usage == Usage(prompt_tokens=5, completion_tokens=9)


def test_it_keeps_zero_reasoning_tokens_without_reasoning():
    parser = ReplyParser()
    usage = {
        "prompt_tokens": 5,
        "completion_tokens": 2,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }

    _feed_all(parser, [_chunk("Hi."), {"choices": [], "usage": usage}])

    assert parser.usage == Usage(
        prompt_tokens=5, completion_tokens=2, reasoning_tokens=0
    )


def test_it_reads_usage_after_the_finish_reason():
    parser = ReplyParser()
    usage = {"prompt_tokens": 3, "completion_tokens": 4}
    chunks = [
        _chunk("Done.", finish_reason="length"),
        _chunk(" ignored"),
        {"choices": [], "usage": usage},
    ]

    events = _feed_all(parser, chunks) + parser.close()

    assert parser.answer == "Done."
    assert parser.status == ReplyStatus.LENGTH_IN_ANSWER
    assert parser.usage == Usage(prompt_tokens=3, completion_tokens=4)
    assert _kinds(events) == [EventKind.ANSWER, EventKind.USAGE, EventKind.END]


def test_it_does_not_start_the_answer_with_empty_content():
    parser = ReplyParser()

    events = _feed_all(parser, [_chunk("", reasoning="Hmm."), _chunk("")])

    assert parser.saw_reasoning
    assert not parser.saw_answer
    assert _kinds(events) == [EventKind.REASONING]


def test_it_emits_end_once():
    parser = ReplyParser()
    parser.feed(_chunk("Hi.", finish_reason="stop"))

    first = parser.feed_done()
    second = parser.close()

    assert _kinds(first) == [EventKind.END]
    assert first[0].status == ReplyStatus.STOP
    assert second == []
    assert parser.feed(_chunk("late")) == []


def test_it_stops_reading_at_done():
    """Some servers keep the connection open after [DONE]."""

    def sse_items():
        yield SSEEvent(json.dumps(_chunk("Hi.", finish_reason="stop")))
        yield SSEEvent("[DONE]")
        raise AssertionError("read past [DONE]")

    events = list(iter_reply_events(sse_items(), ReplyParser()))

    assert events[-1].status == ReplyStatus.STOP


def test_it_replays_events_into_the_final_texts():
    parser = ReplyParser()
    chunks = [
        _chunk("Let me"),
        _chunk(" see.</thi"),
        _chunk("nk>\n\nIt is "),
        _chunk("42."),
    ]

    events = _feed_all(parser, chunks) + parser.close()

    assert _replay(events) == (parser.reasoning, parser.answer)
    assert (parser.reasoning, parser.answer) == ("Let me see.", "It is 42.")


@pytest.mark.parametrize(
    "content, reasoning, answer",
    [
        ("~~~\n</think>\n~~~\nok", "", "~~~\n</think>\n~~~\nok"),
        ("````\n```\n</think>\n````\nok", "", "````\n```\n</think>\n````\nok"),
        ("```py\nx\n```\nThink.</think>ok", "```py\nx\n```\nThink.", "ok"),
        ("```x```\nThink.</think>ok", "```x```\nThink.", "ok"),
        ("A\n    ```\nThink.</think>ok", "A\n    ```\nThink.", "ok"),
        ("```</think>\n```\nok", "", "```</think>\n```\nok"),
    ],
    ids=["tilde", "longer-marker", "after-fence", "not-a-fence", "indented", "info"],
)
def test_it_tracks_code_fences_for_a_bare_closer(content, reasoning, answer):
    parser = ReplyParser()

    _feed_all(parser, [_chunk(char) for char in content] + [_chunk("", "", "stop")])

    assert (parser.reasoning, parser.answer) == (reasoning, answer)


def test_it_takes_a_bare_closer_from_a_model_that_does_not_reason_as_text():
    """A V3 answer about chat templates may mention </think>."""
    text = "To close it, write </think> after the reasoning."
    parser = ReplyParser(reasoning_model=False)

    _feed_all(parser, [_chunk(text[:20]), _chunk(text[20:], finish_reason="stop")])
    parser.feed_done()

    assert (parser.reasoning, parser.answer) == ("", text)


def test_it_still_reclassifies_a_bare_closer_from_a_reasoning_model():
    parser = ReplyParser(reasoning_model=True)

    _feed_all(
        parser, [_chunk("thinking"), _chunk("</think>answer", finish_reason="stop")]
    )
    parser.feed_done()

    assert (parser.reasoning, parser.answer) == ("thinking", "answer")
