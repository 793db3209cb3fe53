"""References in a model's text about a paper become links, safely."""

from academic.models import PaperSection
from academic.refs import render_with_refs

SECTIONS = [
    PaperSection(position=0, title=""),
    PaperSection(position=1, title="2 Methods"),
]


def test_it_links_pages_and_sections_it_knows():
    html = render_with_refs(
        "Found [p. 3], see [§ 2 Methods] and [§ Methods].", SECTIONS, 5
    )

    assert '<a href="#page-3" class="paper-ref">[p. 3]</a>' in html
    assert html.count('href="#section-2"') == 2


def test_it_takes_a_number_for_the_papers_own_not_a_place_in_the_list():
    sections = [
        PaperSection(position=0, title=""),
        PaperSection(position=1, title="1 Introduction"),
        PaperSection(position=2, title="2 Methods"),
    ]

    html = render_with_refs("See [§ 1], [§ 2] and [§ Front matter].", sections, 0)

    assert '<a href="#section-2" class="paper-ref">[§ 1]</a>' in html
    assert '<a href="#section-3" class="paper-ref">[§ 2]</a>' in html
    assert '<a href="#section-1" class="paper-ref">[§ Front matter]</a>' in html


def test_it_leaves_unknown_references_as_text():
    html = render_with_refs("On [p. 9] and in [§ Appendix].", SECTIONS, 5)

    assert "paper-ref" not in html
    assert "[p. 9]" in html and "[§ Appendix]" in html


def test_it_sanitises_first_and_skips_code_and_links():
    text = (
        "<script>alert(1)</script> `[p. 2]` [look](javascript:alert(1)) "
        '[site [p. 2]](https://example.org) <a href="#page-2">x</a>'
    )

    html = render_with_refs(text, SECTIONS, 5)

    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<code>[p. 2]</code>" in html
    assert "javascript:" not in html
    assert 'class="paper-ref"' not in html
    # The model's own relative link was refused by the chat sanitiser.
    assert '<a href="#page-2">' not in html
