from hypothesis import given, settings
from hypothesis import strategies as st

from academic.markdown_mask import mask_markdown
from academic.masking import LATEX, MARKDOWN, PLAIN, mask_document
from academic.placeholders import PLACEHOLDER_PATTERN

DOCUMENT = """---
title: Notes
---
# Results

We use `numpy.linalg.solve` and the **fast** path,
see [the docs](https://example.org/a_(b) "Docs").
The loss is $L = \\sum_i x_i$ and costs \\$5 per run.

```python
def f(x):
    return x  # [not a link](nowhere)
```

$$
E = mc^2
$$

![A plot of *error*](figures/error.png) and [ref link][docs] and <https://example.org>.
Bare https://example.org/path?q=1, then prose.

[docs]: https://example.org/docs "The docs"
<!-- reviewer: shorten this -->
~~~
unclosed fence keeps going
"""


def _prose(masked):
    return PLACEHOLDER_PATTERN.sub(" ", masked.text)


def test_it_restores_the_document_byte_for_byte():
    masked = mask_markdown(DOCUMENT)

    assert masked.restore(masked.text) == DOCUMENT


def test_it_protects_code_math_and_link_targets():
    prose = _prose(mask_markdown(DOCUMENT))

    for hidden in (
        "numpy.linalg",
        "example.org",
        "figures/error.png",
        "sum_i",
        "mc^2",
        "def f",
        "nowhere",
        "reviewer",
        "unclosed fence",
        "title: Notes",
        "[docs]",
        "\\$",
    ):
        assert hidden not in prose, hidden


def test_it_keeps_link_text_and_emphasis_editable():
    prose = _prose(mask_markdown(DOCUMENT))

    assert "the docs" in prose
    assert "A plot of *error*" in prose
    assert "**fast** path" in prose
    assert "ref link" in prose
    assert "then prose." in prose
    assert "per run." in prose


def test_it_does_not_take_prices_for_math():
    masked = mask_markdown("It costs $5 and $6 per hour.")

    assert masked.text == "It costs $5 and $6 per hour."


def test_it_masks_nothing_in_plain_text_but_stray_brackets():
    source = "Plain $x$ text with \\cite{a} and ⟦7⟧ inside."

    masked = mask_document(source, PLAIN)

    assert masked.text.startswith("Plain $x$ text with \\cite{a} and ")
    assert masked.restore(masked.text) == source
    assert len(masked.originals) == 2


def test_it_dispatches_by_document_kind():
    source = "Text with $x$."

    assert "$" not in mask_document(source, LATEX).text
    assert "$" not in mask_document(source, MARKDOWN).text
    assert "$" in mask_document(source, PLAIN).text


MARKDOWN_PIECES = [
    "word ",
    "`",
    "```",
    "~~~",
    "$",
    "$$",
    "\n",
    "[a](b)",
    "](",
    ")",
    "<",
    ">",
    "\\",
    "⟦2⟧",
    "http://x.y ",
]


@given(st.lists(st.sampled_from(MARKDOWN_PIECES), max_size=30))
@settings(max_examples=300, deadline=None)
def test_it_round_trips_any_mix_of_markdown_pieces(pieces):
    source = "".join(pieces)

    masked = mask_markdown(source)

    assert masked.restore(masked.text) == source
