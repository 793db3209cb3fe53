"""The simulator's code-reading mode answers from what the prompt holds."""

from academic import code_prompts
from assistant.simulator import codereading

FILE_MAP = (
    "app/core.py (20 lines, module app.core)\n"
    "  class Engine app/core.py:3; methods: run app/core.py:5, stop app/core.py:15\n"
    "  function helper app/core.py:18"
)


def part(first_line, lines):
    return code_prompts.part_messages(
        "en", "app/core.py", FILE_MAP, lines, first_line, 20
    )


def test_it_names_only_the_definitions_within_the_part():
    answer = codereading.answer_for(part(1, ["x"] * 10))

    assert "class `Engine` at `app/core.py:3`" in answer
    assert "method `run` at `app/core.py:5`" in answer
    assert "app/core.py:15" not in answer and "helper" not in answer


def test_it_answers_a_follow_up_from_the_map_in_the_system_message():
    context = code_prompts.conversation_context("app", "Files:\n" + FILE_MAP, "")
    messages = [
        {"role": "system", "content": "Be helpful.\n\n" + context},
        {"role": "user", "content": "What does stop do?"},
    ]

    answer = codereading.answer_for(messages)

    assert answer == "From the project map:\n\n- method `stop` is at `app/core.py:15`"


def test_it_leaves_other_requests_alone():
    assert codereading.answer_for([{"role": "user", "content": "Hello"}]) is None
