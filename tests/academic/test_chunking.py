import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from academic.chunking import split_into_chunks
from academic.latex import mask_latex
from academic.placeholders import PLACEHOLDER_PATTERN, placeholder_numbers
from chat.prompt import count_text_tokens


def test_it_keeps_a_short_text_whole():
    assert split_into_chunks("One paragraph.\n\nAnother.", 100) == [
        "One paragraph.\n\nAnother."
    ]


def test_it_cuts_at_paragraphs_first():
    first = "First paragraph has several words in it. " * 3
    second = "Second paragraph, also several words. " * 3
    text = f"{first}\n\n{second}\n"

    chunks = split_into_chunks(text, count_text_tokens(first) + 5)

    assert chunks == [f"{first}\n\n", f"{second}\n"]


def test_it_cuts_a_long_paragraph_at_sentences_then_clauses():
    text = (
        "The first sentence is short. The second one, which is longer, has "
        "clauses; it goes on and on, and on."
    )

    chunks = split_into_chunks(text, 12)

    assert "".join(chunks) == text
    assert chunks[0] == "The first sentence is short. "
    assert all(count_text_tokens(chunk) <= 12 for chunk in chunks)
    assert all(chunk.endswith((", ", "; ", ". ", ".")) for chunk in chunks)


def test_it_cuts_chinese_at_full_width_commas_c05(shared_dir):
    source = (shared_dir / "academic-cases/c05_long_block.tex").read_text("utf-8")
    masked = mask_latex(source)

    chunks = split_into_chunks(masked.text, 400)

    assert "".join(chunks) == masked.text
    assert masked.restore("".join(chunks)) == source
    assert len(chunks) > 10
    for chunk in chunks:
        assert count_text_tokens(chunk) <= 400
    long_paragraph_chunks = [chunk for chunk in chunks if "我们" in chunk]
    for chunk in long_paragraph_chunks[:-1]:
        assert chunk.endswith("，")


def test_it_never_cuts_a_placeholder():
    text = "⟦12⟧⟦13⟧⟦14⟧ words⟦15⟧more"

    chunks = split_into_chunks(text, 1)

    assert "".join(chunks) == text
    assert "⟦12⟧" in chunks and "⟦15⟧" in chunks


def test_it_cuts_a_run_without_any_boundary():
    text = "无标点的很长的一段文字" * 20

    chunks = split_into_chunks(text, 30)

    assert "".join(chunks) == text
    assert all(count_text_tokens(chunk) <= 30 for chunk in chunks)


def test_it_refuses_a_budget_below_one():
    with pytest.raises(ValueError):
        split_into_chunks("text", 0)


def test_it_chunks_a_real_paper_within_budget(shared_dir):
    source = (shared_dir / "papers/scipy-1.0/paper.tex").read_text("utf-8")
    masked = mask_latex(source)

    chunks = split_into_chunks(masked.text, 800)

    assert "".join(chunks) == masked.text
    assert all(count_text_tokens(chunk) <= 800 for chunk in chunks)
    numbers = [n for chunk in chunks for n in placeholder_numbers(chunk)]
    assert numbers == placeholder_numbers(masked.text)


TEXT_PIECES = st.sampled_from(
    [
        "word",
        " ",
        "中文",
        "，",
        "；",
        "。",
        ". ",
        ", ",
        "\n",
        "\n\n",
        "⟦1⟧",
        "⟦23⟧",
        "⟦456⟧",
        "x" * 40,
        "长" * 30,
    ]
)


@given(st.lists(TEXT_PIECES, max_size=60), st.integers(min_value=1, max_value=60))
@settings(max_examples=400, deadline=None)
def test_it_gives_back_the_input_exactly(pieces, budget):
    text = "".join(pieces)

    chunks = split_into_chunks(text, budget)

    assert "".join(chunks) == text
    assert all(chunks)
    for chunk in chunks:
        whole_placeholder = PLACEHOLDER_PATTERN.fullmatch(chunk)
        assert count_text_tokens(chunk) <= budget or whole_placeholder
    # Every placeholder sits whole inside one chunk.
    numbers = [n for chunk in chunks for n in placeholder_numbers(chunk)]
    assert numbers == placeholder_numbers(text)
