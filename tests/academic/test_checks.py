from academic.checks import check_chunk, check_placeholders
from academic.latex import mask_latex
from academic.masking import mask_plain


def _codes(failures):
    return {failure.code for failure in failures}


def _c07(shared_dir):
    source = (shared_dir / "academic-cases/c07_cite_keys.tex").read_text("utf-8")
    return mask_latex(source)


def _number_of(masked, fragment):
    return next(n for n, original in masked.originals.items() if fragment in original)


def test_it_accepts_an_untouched_chunk(shared_dir):
    masked = _c07(shared_dir)

    assert check_chunk(masked, masked.text, masked.text) == []


def test_it_accepts_edited_prose(shared_dir):
    masked = _c07(shared_dir)

    edited = masked.text.replace("reported similar gains", "report comparable gains")
    edited = edited.replace("e.g.", "for example")

    assert check_chunk(masked, masked.text, edited) == []


def test_it_catches_a_lost_placeholder(shared_dir):
    masked = _c07(shared_dir)
    number = _number_of(masked, "wang2019deep")

    returned = masked.text.replace(f"⟦{number}⟧", "")

    failures = check_chunk(masked, masked.text, returned)
    assert "placeholder_missing" in _codes(failures)
    assert "keys" in _codes(failures)
    assert f"⟦{number}⟧" in failures[0].details


def test_it_catches_a_duplicated_placeholder(shared_dir):
    masked = _c07(shared_dir)
    number = _number_of(masked, "eq:loss")

    returned = masked.text.replace(f"⟦{number}⟧", f"⟦{number}⟧ ⟦{number}⟧")

    assert "placeholder_duplicated" in _codes(
        check_chunk(masked, masked.text, returned)
    )


def test_it_catches_reordered_placeholders():
    sent = "First ⟦1⟧ then ⟦2⟧."

    failures = check_placeholders(sent, "Then ⟦2⟧ first ⟦1⟧.")

    assert _codes(failures) == {"placeholder_order"}


def test_it_catches_invented_and_damaged_placeholders():
    sent = "First ⟦1⟧ then ⟦2⟧."

    assert "placeholder_unknown" in _codes(check_placeholders(sent, "⟦1⟧ ⟦2⟧ ⟦9⟧"))
    assert "placeholder_unknown" in _codes(check_placeholders(sent, "⟦1⟧ ⟦2⟧ ⟦3"))


def test_it_catches_a_changed_key():
    masked = mask_plain("As shown by \\citep[see][p.~2]{smith_2020,lee-2021a}.")

    returned = "As shown by \\citep[见][第2页]{smith_2020，lee-2021a}."

    failures = check_chunk(masked, masked.text, returned)
    assert _codes(failures) == {"keys"}
    assert "smith_2020" in failures[0].details


def test_it_ignores_spacing_between_keys_and_translated_notes():
    masked = mask_plain("研究\\cite{smith_2020, lee-2021a}表明")

    returned = "Studies \\cite{smith_2020,lee-2021a} show"

    assert check_chunk(masked, masked.text, returned) == []


def test_it_catches_a_dropped_brace():
    masked = mask_plain("The \\textbf{important} result.")

    failures = check_chunk(masked, masked.text, "The \\textbf{important result.")

    assert _codes(failures) == {"braces"}


def test_it_catches_a_dropped_brace_placeholder(shared_dir):
    source = (shared_dir / "academic-cases/c01_custom_macros.tex").read_text("utf-8")
    masked = mask_latex(source)
    number = next(n for n, original in masked.originals.items() if original == "}")
    chunk = masked.text

    returned = chunk.replace(f"⟦{number}⟧", "", 1)

    codes = _codes(check_chunk(masked, chunk, returned))
    assert "placeholder_missing" in codes
    assert "braces" in codes


def test_it_accepts_a_chunk_holding_half_a_group():
    masked = mask_plain("\\revise{In addition, we run an ablation.")

    returned = "\\revise{Additionally, an ablation is run."

    assert check_chunk(masked, masked.text, returned) == []


def test_it_ignores_escaped_braces_and_comments():
    masked = mask_plain("A set \\{x\\} here. % closing } in a comment\n")

    returned = "A set \\{x\\} here, edited. % closing } in a comment\n"

    assert check_chunk(masked, masked.text, returned) == []


def test_it_catches_a_translated_environment_name():
    masked = mask_plain("\\begin{theorem}Every set is small.\\end{theorem}")

    returned = "\\begin{定理}每个集合都很小。\\end{定理}"

    failures = check_chunk(masked, masked.text, returned)
    assert _codes(failures) == {"environments"}
    assert "theorem" in failures[0].details


def test_it_gives_short_translatable_messages():
    masked = mask_plain("\\begin{proof}x\\end{proof}")

    failures = check_chunk(masked, masked.text, "x")

    assert failures
    for failure in failures:
        assert str(failure.message)
        assert failure.details
