"""The simulator's polishing mode: edits that keep placeholders, and damage."""

import pytest

from academic.checks import check_chunk
from academic.masking import mask_document
from assistant.simulator import polish
from assistant.simulator.server import RequestError

SOURCE = (
    "\\begin{abstract}\nIn addition, we run a lot of tests \\cite{a,b} on "
    "$x^2$ data.\n\\end{abstract}\n本文提出了较好的方法。\n"
)


def answer_text(answer):
    return answer.removeprefix("<text>\n").removesuffix("\n</text>")


def test_it_answers_only_requests_with_a_text_block():
    assert polish.answer_for("Why is the sky blue?") is None
    assert (
        polish.answer_for("<text>\nwe run it\n</text>") == "<text>\nwe ran it\n</text>"
    )


def test_it_edits_prose_and_copies_placeholders():
    masked = mask_document(SOURCE, "latex")

    edited = answer_text(polish.answer_for(f"<text>\n{masked.text}\n</text>"))

    assert check_chunk(masked, masked.text, edited) == []
    restored = masked.restore(edited)
    assert "Moreover, we ran many tests \\cite{a,b} on $x^2$ data." in restored
    assert "本文提出更好的方法。" in restored


@pytest.mark.parametrize(
    ("damage", "code"),
    [
        ("key", "keys"),
        ("brace", "braces"),
        ("placeholder", "placeholder_missing"),
        ("environment", "environments"),
    ],
)
def test_each_damage_is_caught_by_its_check(damage, code):
    masked = mask_document(SOURCE, "latex")

    damaged = answer_text(polish.answer_for(f"<text>\n{masked.text}\n</text>", damage))

    failures = check_chunk(masked, masked.text, damaged)
    # A lost placeholder may also take an environment marker with it.
    assert failures and failures[0].code == code


def test_it_damages_visible_latex_the_way_models_do():
    text = "See \\cite{lee2020} and \\begin{theorem}x\\end{theorem}."

    assert "\\cite{lee2020x}" in polish.change_key(text)
    assert polish.translate_environment(text).count("定理") == 2
    assert polish.drop_brace(text).count("}") == text.count("}") - 1


def test_a_heeding_model_damages_only_until_told():
    request = "<text>\nwe run it ⟦1⟧\n</text>"
    retry = "rejected because: placeholder missing\n\n" + request

    assert "⟦1⟧" not in polish.answer_for(request, "placeholder_once")
    assert "⟦1⟧" in polish.answer_for(retry, "placeholder_once")
    assert "⟦1⟧" not in polish.answer_for(retry, "placeholder")


def test_it_refuses_an_unknown_damage():
    with pytest.raises(RequestError):
        polish.check_damage("everything", RequestError)
