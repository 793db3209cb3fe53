import re
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.core.management import call_command
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from chat.rendering import ALLOWED_TAGS, render_markdown, render_plain

VENDOR_DIR = Path(__file__).resolve().parents[2] / "static" / "vendor"


class _TagCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags = []
        self.attributes = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_data(self, data):
        self.text.append(data)


def parse(rendered):
    collector = _TagCollector()
    collector.feed(rendered)
    collector.close()
    return collector


def math_elements(rendered):
    return re.findall(
        r'<(span|div) class="(math-inline|math-display)">(.*?)</\1>', rendered, re.S
    )


def test_it_renders_headings_lists_and_paragraphs():
    rendered = render_markdown("# Title\n\nSome *text*.\n\n- one\n- two\n\n1. first")

    assert "<h1>Title</h1>" in rendered
    assert "<p>Some <em>text</em>.</p>" in rendered
    assert "<ul>\n<li>one</li>\n<li>two</li>\n</ul>" in rendered
    assert "<ol>\n<li>first</li>\n</ol>" in rendered


def test_it_renders_tables_with_align_attributes():
    rendered = render_markdown("| a | b |\n|:--|--:|\n| 1 | 2 |")

    assert "<table>" in rendered
    assert '<th align="left">a</th>' in rendered
    assert '<td align="right">2</td>' in rendered
    assert "style" not in rendered


def test_it_renders_fenced_code_with_language_class_and_escaped_code():
    rendered = render_markdown("```python\nif a < b and c > d:\n    pass\n```")

    assert '<pre><code class="language-python">' in rendered
    assert "if a &lt; b and c &gt; d:" in rendered


def test_it_keeps_only_language_classes_on_code():
    rendered = render_markdown('<code class="language-c++ evil x">int</code>')

    assert '<code class="language-c++">int</code>' in rendered


@pytest.mark.parametrize(
    "text, tag, css_class",
    [
        ("Let $a_1 * b_2$ be.", "span", "math-inline"),
        ("Let \\(a_1 * b_2\\) be.", "span", "math-inline"),
        ("$$a_1 * b_2$$", "div", "math-display"),
        ("\\[a_1 * b_2\\]", "div", "math-display"),
        ("$$\na_1 * b_2\n$$", "div", "math-display"),
    ],
)
def test_it_renders_math_in_all_delimiter_forms(text, tag, css_class):
    rendered = render_markdown(text)

    assert math_elements(rendered) == [(tag, css_class, "a_1 * b_2")]
    assert "<em>" not in rendered
    assert "$" not in rendered
    assert "\\(" not in rendered and "\\[" not in rendered


def test_it_escapes_tex_and_keeps_backslashes():
    rendered = render_markdown("$$\n\\begin{cases} a < b & c \\\\ d \\end{cases}\n$$")

    assert math_elements(rendered) == [
        (
            "div",
            "math-display",
            "\\begin{cases} a &lt; b &amp; c \\\\ d \\end{cases}",
        )
    ]


def test_it_keeps_display_math_inside_a_paragraph_as_a_block_span():
    rendered = render_markdown("Given $$x^2$$ holds.")

    assert rendered == '<p>Given <span class="math-display">x^2</span> holds.</p>'


def test_it_does_not_treat_prices_as_math():
    rendered = render_markdown("It costs $5 and $10, or $ 3 each.")

    assert math_elements(rendered) == []
    assert "It costs $5 and $10, or $ 3 each." in rendered


def test_it_does_not_treat_escaped_dollars_as_math():
    rendered = render_markdown("Pay \\$x$ now, not \\$y\\$.")

    assert math_elements(rendered) == []
    assert "Pay $x$ now, not $y$." in rendered


def test_it_requires_no_digit_after_the_closing_dollar():
    rendered = render_markdown("From $a$5 to $b$.")

    assert math_elements(rendered) == [("span", "math-inline", "a$5 to $b")]


def test_it_leaves_an_unclosed_display_formula_as_text():
    rendered = render_markdown("Then\n\n$$\n\\frac{a_1}{")

    assert math_elements(rendered) == []
    assert "$$" in rendered
    assert "\\frac{a_1}{" in rendered


def test_it_leaves_an_unclosed_inline_formula_as_text():
    rendered = render_markdown("So $x_1 + ")

    assert rendered == "<p>So $x_1 + </p>"


def test_it_does_not_close_math_across_a_blank_line():
    rendered = render_markdown("$a\n\nb$")

    assert math_elements(rendered) == []


def test_it_leaves_math_in_inline_code_alone():
    rendered = render_markdown("Use `$x_1$` or ``\\(y\\)``, then $z$.")

    assert "<code>$x_1$</code>" in rendered
    assert "<code>\\(y\\)</code>" in rendered
    assert math_elements(rendered) == [("span", "math-inline", "z")]


def test_it_leaves_math_in_fenced_code_alone():
    text = "```bash\necho $HOME and $PATH\n$$x$$\n```\n\nthen $y$"

    rendered = render_markdown(text)

    assert "echo $HOME and $PATH\n$$x$$" in rendered
    assert math_elements(rendered) == [("span", "math-inline", "y")]


def test_it_leaves_math_in_an_unclosed_fence_alone():
    rendered = render_markdown("```python\nprice = $a$")

    assert math_elements(rendered) == []


def test_it_leaves_math_in_indented_code_alone():
    rendered = render_markdown("Text:\n\n    cost = $a$ + \\$b\n")

    assert "<pre><code>cost = $a$ + \\$b\n</code></pre>" in rendered


def test_it_keeps_dollar_text_inside_link_urls():
    rendered = render_markdown("[see $x$](https://example.com/$a$b)")

    assert 'href="https://example.com/$a$b"' in rendered
    assert '>see <span class="math-inline">x</span></a>' in rendered


def test_it_shows_a_script_tag_as_escaped_text():
    rendered = render_markdown("<script>alert(1)</script>")

    assert "<script" not in rendered.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered


def test_it_drops_raw_images_and_their_handlers():
    rendered = render_markdown('<img src=x onerror=alert(1)> and <img alt="pic" src=y>')

    assert "<img" not in rendered
    assert "onerror" not in rendered
    assert "src" not in rendered
    assert "pic" in rendered


def test_it_renders_markdown_images_as_their_alt_text():
    rendered = render_markdown("See ![a chart](http://evil.example/?q=secret).")

    assert rendered == "<p>See a chart.</p>"


def test_it_removes_javascript_links():
    rendered = render_markdown("[x](javascript:alert(1)) and [y](JaVaScRiPt:alert(2))")

    assert "javascript:" not in rendered.lower()
    assert ">x</a>" in rendered


def test_it_removes_relative_links():
    rendered = render_markdown("[log out](/accounts/logout/)")

    assert "href" not in rendered


def test_it_removes_event_handlers_and_opens_links_apart():
    rendered = render_markdown('<a href="http://e" onclick="x">e</a>')

    assert "onclick" not in rendered
    assert (
        '<a href="http://e" rel="nofollow noopener noreferrer" target="_blank">e</a>'
        in rendered
    )


def test_it_keeps_mailto_and_https_links():
    rendered = render_markdown("[a](https://example.com/x) <mailto:me@example.com>")

    hrefs = [value for name, value in parse(rendered).attributes if name == "href"]
    assert hrefs == ["https://example.com/x", "mailto:me@example.com"]


def test_it_shows_raw_details_as_escaped_text():
    rendered = render_markdown("<details><summary>s</summary>hidden</details>")

    assert "<details" not in rendered
    assert "&lt;details&gt;" in rendered
    assert "&lt;summary&gt;s&lt;/summary&gt;" in rendered


def test_it_removes_style_attributes():
    rendered = render_markdown('<p style="position:fixed">x</p>')

    assert "style" not in rendered
    assert "<p>x</p>" in rendered


def test_it_keeps_only_math_classes_on_span_and_div():
    rendered = render_markdown('<span class="math-inline evil">x</span><div class="a">')

    assert '<span class="math-inline">x</span>' in rendered
    assert "<div>" in rendered


def test_it_passes_chinese_text_through():
    rendered = render_markdown("## 标题\n\n中文段落，公式 $x^2$ 在此。")

    assert "<h2>标题</h2>" in rendered
    assert '中文段落，公式 <span class="math-inline">x^2</span> 在此。' in rendered


def test_it_escapes_plain_text():
    assert (
        render_plain("a < b & <script>\n中文") == "a &lt; b &amp; &lt;script&gt;\n中文"
    )


def test_it_renders_the_same_answer_from_several_threads():
    text = "# T\n\n" + "Text $x_1$ and `code` with **bold**.\n\n" * 50
    expected = render_markdown(text)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(render_markdown, [text] * 40))

    assert results == [expected] * 40


def test_it_renders_a_long_answer():
    paragraph = "Some **bold** text with $a_i^2$ and `code`.\n\n"
    code = "```python\nfor i in range(10):\n    print(i)\n```\n\n"
    text = (paragraph * 5 + code) * 60

    rendered = render_markdown(text)

    assert len(math_elements(rendered)) == 300
    assert rendered.count('<code class="language-python">') == 60


_TRICKY_FRAGMENTS = [
    "$", "$$", "\\$", "\\(", "\\)", "\\[", "\\]", "`", "```", "~~~", "\n", "\n\n",
    "*", "_", "<", ">", "&", '"', "'", "<script>", "</script>", "<img src=x ",
    "onerror=alert(1)", " onclick=", "javascript:", "[x](", ")", "![a](",
    "<a href=\"", "<details>", "<!--", "-->", "| a |", "|---|", "# ", "- ", "    ",
    "<span class=\"math-inline\">", "</span>", "mathph", "q", "x", "1", "中",
]  # fmt: skip

_tricky_text = st.lists(
    st.one_of(st.sampled_from(_TRICKY_FRAGMENTS), st.text(max_size=4)), max_size=40
).map("".join)


@hypothesis_settings(max_examples=300, deadline=None)
@given(_tricky_text)
def test_it_never_emits_active_html(text):
    rendered = render_markdown(text)

    parsed = parse(rendered)
    assert "<script" not in rendered.lower()
    assert set(parsed.tags) <= ALLOWED_TAGS
    for name, value in parsed.attributes:
        assert not name.startswith("on")
        assert name != "style"
        if name == "href":
            assert value.startswith(("http:", "https:", "mailto:"))


def test_it_collects_vendored_assets_with_the_manifest_storage(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    settings.STATICFILES_DIRS = [("vendor", VENDOR_DIR)]
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {
            "BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"
        },
    }

    call_command("collectstatic", "--noinput", verbosity=0)

    katex_dir = tmp_path / "vendor" / "katex"
    hashed_css = list(katex_dir.glob("katex.min.*.css"))
    hashed_fonts = list((katex_dir / "fonts").glob("KaTeX_Main-Regular.*.woff2"))
    assert (katex_dir / "katex.min.css").is_file()
    assert len(hashed_css) == 1
    assert len(hashed_fonts) == 1
    assert hashed_fonts[0].name in hashed_css[0].read_text()
    for name in ("highlight.min.js", "github.min.css", "github-dark.min.css"):
        assert (tmp_path / "vendor" / "highlight" / name).is_file()
