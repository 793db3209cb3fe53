import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from academic.encoding import decode_bytes, encode_text
from academic.latex import mask_latex
from academic.placeholders import PLACEHOLDER_PATTERN, placeholder_numbers

CASES = [
    "c01_custom_macros.tex",
    "c03_macro_input/main.tex",
    "c03_macro_input/parts/intro.tex",
    "c03_macro_input/parts/method.tex",
    "c05_long_block.tex",
    "c06_abstract_cmd.tex",
    "c07_cite_keys.tex",
    "c09_cjk_diff_before.tex",
    "c09_cjk_diff_after.tex",
]


def _read_case(shared_dir, name):
    return (shared_dir / "academic-cases" / name).read_text("utf-8")


def _prose(masked):
    """The masked text with placeholders removed: what the model may edit."""
    return PLACEHOLDER_PATTERN.sub(" ", masked.text)


@pytest.mark.parametrize("name", CASES)
def test_it_restores_every_case_byte_for_byte(shared_dir, name):
    source = _read_case(shared_dir, name)

    masked = mask_latex(source)

    assert masked.restore(masked.text) == source


@pytest.mark.parametrize("name", CASES)
def test_it_leaves_no_latex_syntax_in_the_prose(shared_dir, name):
    masked = mask_latex(_read_case(shared_dir, name))

    prose = _prose(masked)

    for syntax in ("\\", "$", "%", "{", "}", "~"):
        assert syntax not in prose


def test_it_round_trips_every_real_paper(shared_dir):
    paths = sorted((shared_dir / "papers").rglob("*.tex"))
    assert len(paths) >= 10

    for path in paths:
        data = path.read_bytes()
        decoded = decode_bytes(data)

        masked = mask_latex(decoded.text)
        written = encode_text(masked.restore(masked.text), decoded)

        assert written == data, path
        assert "\\" not in _prose(masked), path


def test_it_keeps_the_authors_macros_and_comments_c01(shared_dir):
    source = _read_case(shared_dir, "c01_custom_macros.tex")

    masked = mask_latex(source)
    prose = _prose(masked)

    assert "reduces the error by a large margin" in prose
    assert "In addition, we run an ablation on" in prose
    assert "three" in prose
    assert "The second stage is optional." in prose
    assert "reviewer 2" not in prose
    assert "rerun seed 3" not in prose
    assert "chen2022a" not in prose
    assert "textcolor" not in prose
    assert any(
        original == "40\\%" or "\\%" in original
        for original in masked.originals.values()
    )


def test_it_hides_a_macro_that_inputs_its_argument_c03(shared_dir):
    source = _read_case(shared_dir, "c03_macro_input/main.tex")

    masked = mask_latex(source)

    assert "#1" not in masked.text
    assert "method" not in _prose(masked)
    assert masked.restore(masked.text) == source


def test_it_protects_the_author_block_and_keeps_the_long_paragraph_c05(shared_dir):
    masked = mask_latex(_read_case(shared_dir, "c05_long_block.tex"))
    prose = _prose(masked)

    assert "Author001" not in prose
    assert "Author300" not in prose
    sentence = "我们在多个数据集上进行了实验"
    source = _read_case(shared_dir, "c05_long_block.tex")
    assert prose.count(sentence) == source.count(sentence) > 100


def test_it_polishes_an_abstract_given_as_a_command_c06(shared_dir):
    masked = mask_latex(_read_case(shared_dir, "c06_abstract_cmd.tex"))
    prose = _prose(masked)

    assert "We presents a lightweight detector" in prose
    assert "Small objects is hard to detect" in prose
    assert "liu2021" not in prose
    assert "aerial imagery" not in prose
    assert "Fragment in the style" not in prose


def test_it_protects_keys_but_not_citation_notes_c07(shared_dir):
    masked = mask_latex(_read_case(shared_dir, "c07_cite_keys.tex"))
    prose = _prose(masked)

    for key in ("smith_2020", "lee-2021a", "wang2019deep", "Zhao:2018", "eq:loss"):
        assert key not in prose
    assert "fig:pipeline" not in prose
    assert "mathcal" not in prose
    assert "e.g." in prose
    assert "见" in prose and "第3节" in prose
    assert "先前的研究" in prose


def test_it_protects_math_and_environments():
    source = (
        "Let $x$ be \\emph{small}.\n"
        "\\begin{equation}\n  a = b % why\n\\end{equation}\n"
        "\\begin{itemize}\n  \\item First point, see \\autoref{sec:a}.\n"
        "\\end{itemize}\n"
        "Display \\[ y^2 \\] and \\url{https://example.org/a_b}.\n"
        "\\href{https://example.org}{the site} and \\cref{a,b} \\citet*{k}.\n"
    )

    masked = mask_latex(source)
    prose = _prose(masked)

    assert masked.restore(masked.text) == source
    assert "small" in prose
    assert "First point, see" in prose
    assert "the site" in prose
    for hidden in ("equation", "itemize", "sec:a", "example.org", "y^2", "why"):
        assert hidden not in prose


def test_it_masks_definitions_that_would_derail_the_parser():
    source = (
        "\\newcommand{\\be}{\\begin{equation}}\n"
        "\\newcommand{\\ee}{\\end{equation}}\n"
        "\\def\\half#1{\\frac{#1}{2}}\n"
        "\\renewcommand*\\vec[1]{\\mathbf{#1}}\n"
        "\\DeclareMathOperator*{\\argmax}{arg\\,max}\n"
        "\\newenvironment{proofsketch}{\\begin{proof}[Sketch]}{\\end{proof}}\n"
        "\\let\\oldsection=\\section\n"
        "% \\newcommand{\\broken}{{\n"
        "The method works well.\n"
        "\\be x = 1 \\ee\n"
    )

    masked = mask_latex(source)
    prose = _prose(masked)

    assert masked.restore(masked.text) == source
    assert "The method works well." in prose
    for hidden in ("newcommand", "equation", "frac", "argmax", "proof", "Sketch"):
        assert hidden not in prose


def test_it_protects_verbatim_listings_and_verb():
    source = (
        "Run \\verb|pip install x%y| first.\n"
        "\\begin{lstlisting}[language=Python]\nprint('}')  # {\n\\end{lstlisting}\n"
        "\\begin{verbatim}\n\\end{itemize} % not a comment\n\\end{verbatim}\n"
        "\\input chapters/intro\n"
        "Done.\n"
    )

    masked = mask_latex(source)
    prose = _prose(masked)

    assert masked.restore(masked.text) == source
    assert "Run" in prose and "first." in prose and "Done." in prose
    for hidden in ("pip", "print", "itemize", "chapters", "intro"):
        assert hidden not in prose


def test_it_keeps_placeholders_unique_when_the_input_contains_brackets():
    source = "Notation ⟦1⟧ and ⟦x⟧ from the paper, $a$ and ⟦2⟧.\n"

    masked = mask_latex(source)

    assert masked.restore(masked.text) == source
    numbers = placeholder_numbers(masked.text)
    assert numbers == sorted(set(numbers))
    assert set(numbers) == set(masked.originals)
    assert re.sub(r"⟦\d+⟧", "", masked.text).count("⟦") == 0


def test_it_does_not_crash_on_broken_latex():
    sources = [
        "Unclosed \\textbf{bold and \\begin{itemize} \\item x",
        "Stray } brace and $ unclosed math",
        "\\end{document} before begin",
        "\\newcommand{\\x}{",
        "\\verb",
        "",
    ]

    for source in sources:
        masked = mask_latex(source)

        assert masked.restore(masked.text) == source


LATEX_PIECES = [
    "word ",
    "中文，",
    "。",
    "\n",
    "\n\n",
    "{",
    "}",
    "$",
    "$x$",
    "%",
    "\\%",
    "\\",
    "\\emph{",
    "\\cite{a}",
    "\\begin{itemize}",
    "\\end{itemize}",
    "\\newcommand{\\be}{\\begin{equation}}",
    "\\verb|",
    "[",
    "]",
    "~",
    "&",
    "⟦1⟧",
    "⟧",
]


@given(st.lists(st.sampled_from(LATEX_PIECES), max_size=30))
@settings(max_examples=300, deadline=None)
def test_it_round_trips_any_mix_of_latex_pieces(pieces):
    source = "".join(pieces)

    masked = mask_latex(source)

    assert masked.restore(masked.text) == source
    assert len(placeholder_numbers(masked.text)) == len(masked.originals)
