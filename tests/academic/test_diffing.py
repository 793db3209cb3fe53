from hypothesis import given, settings
from hypothesis import strategies as st

from academic.diffing import diff_changes, merge, tokenize


def _c09(shared_dir):
    cases = shared_dir / "academic-cases"
    before = (cases / "c09_cjk_diff_before.tex").read_text("utf-8")
    after = (cases / "c09_cjk_diff_after.tex").read_text("utf-8")
    return before, after


def test_it_finds_the_five_small_chinese_changes_c09(shared_dir):
    before, after = _c09(shared_dir)

    changes = diff_changes(before, after)

    assert [(change.original, change.replacement) for change in changes] == [
        ("了", ""),
        ("", "新"),
        ("", "公开"),
        ("", "均"),
        ("较", "更"),
    ]


def test_it_accepts_and_rejects_each_change_on_its_own_c09(shared_dir):
    before, after = _c09(shared_dir)
    changes = diff_changes(before, after)

    accept_all = {change.index: True for change in changes}
    only_new = {1: True}

    assert merge(before, changes, accept_all) == after
    assert merge(before, changes, {}) == before
    assert merge(before, changes, only_new) == before.replace("的方法", "的新方法")


def test_it_diffs_english_by_word():
    before = "The encoder have four stages; each stage halve the resolution."
    after = "The encoder has four stages; each stage halves the resolution."

    changes = diff_changes(before, after)

    assert [(c.original, c.replacement) for c in changes] == [
        ("have", "has"),
        ("halve", "halves"),
    ]
    assert merge(before, changes, {0: True}) == before.replace("have", "has")


def test_it_splits_han_runs_into_words():
    tokens = tokenize("本文提出了一种方法 and more")

    assert "".join(tokens) == "本文提出了一种方法 and more"
    assert "本文" in tokens and "方法" in tokens
    assert "本文提出了一种方法" not in tokens


TEXT = st.lists(
    st.sampled_from(
        ["本文", "提出", "了", "方法", "，", "。", "the ", "model ", "has", " ", "\n"]
    ),
    max_size=25,
).map("".join)


@given(TEXT, TEXT, st.lists(st.booleans(), max_size=30))
@settings(max_examples=300, deadline=None)
def test_it_merges_to_either_text_byte_for_byte(before, after, choices):
    changes = diff_changes(before, after)

    assert merge(before, changes, {c.index: True for c in changes}) == after
    assert merge(before, changes, {c.index: False for c in changes}) == before
    partial = merge(before, changes, dict(enumerate(choices)))
    assert isinstance(partial, str)
