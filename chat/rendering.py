"""Turn untrusted model answers into HTML that is safe to insert with innerHTML.

Math is lifted out of the text before Markdown sees it, so that `_`, `*` and `\\`
inside a formula are not read as Markdown, and put back afterwards as elements
that static/chat/render.js typesets with KaTeX. Every result then passes through
an allow-list sanitizer, which is what makes the output safe: the math step only
has to keep formulas intact.
"""

import bisect
import html
import re
import secrets
import threading

import bleach
import markdown
from bleach.html5lib_shim import Filter
from markdown.extensions.tables import TableExtension

ALLOWED_TAGS = frozenset(
    "p br hr h1 h2 h3 h4 h5 h6 strong em del code pre blockquote ul ol li a"
    " table thead tbody tr th td span div sup sub".split()
)

ALLOWED_LINK_SCHEMES = ("http:", "https:", "mailto:")

LINK_REL = "nofollow noopener noreferrer"

MATH_CLASSES = frozenset({"math-inline", "math-display"})

CODE_CLASS_RE = re.compile(r"language-[a-z0-9+#-]+")

CLASSED_TAGS = frozenset({"code", "span", "div"})


# The placeholder holds only ASCII letters and digits, so Markdown passes it
# through untouched, and the per-process key keeps a model from forging one.
_PLACEHOLDER_KEY = secrets.token_hex(8)

_PLACEHOLDER_RE = rf"mathph{_PLACEHOLDER_KEY}x(\d+)q"

_RESTORE_RE = re.compile(
    rf"<p>{_PLACEHOLDER_RE}</p>"
    rf"|(<code\b[^>]*>.*?</code>)"
    rf"|(<[^>]*>)"
    rf"|{_PLACEHOLDER_RE}",
    re.DOTALL,
)

_PLACEHOLDER_ONLY_RE = re.compile(_PLACEHOLDER_RE)

_TOKEN_RE = re.compile(
    r"(?P<fence>^[ \t]*(?:`{3,}|~{3,}))"
    r"|(?P<ticks>`+)"
    r"|(?P<escaped_dollar>\\\$)"
    r"|(?P<escaped>\\[\\`])"
    r"|(?P<display_dollar>\$\$)"
    r"|(?P<display_bracket>\\\[)"
    r"|(?P<inline_dollar>\$)"
    r"|(?P<inline_paren>\\\()",
    re.MULTILINE,
)

_BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")

# Pandoc's rule for a closing `$`: no space (or unescaped backslash) right
# before it and no digit right after it, so "$5 and $10" stays text.
_INLINE_DOLLAR_CLOSER_RE = re.compile(r"(?<![\s\\])(?:\\\\)*\$(?!\d)")


class _MathStash:
    """Math and escaped dollars lifted out of one answer, keyed by index.

    Each entry keeps the HTML for running text, the HTML for a paragraph of its
    own, and the escaped source for places where it is only text.
    """

    def __init__(self):
        self.entries = []

    def add(self, inline_html, block_html, source):
        self.entries.append((inline_html, block_html, html.escape(source)))
        return f"mathph{_PLACEHOLDER_KEY}x{len(self.entries) - 1}q"

    def add_dollar(self, source):
        return self.add("$", "<p>$</p>", source)

    def add_math(self, tex, source, display):
        tex_html = html.escape(tex.strip())
        if not display:
            inline_html = f'<span class="math-inline">{tex_html}</span>'
            return self.add(inline_html, f"<p>{inline_html}</p>", source)

        # A display formula inside running text stays a span, which keeps the
        # paragraph valid HTML; KaTeX still sets it on a line of its own.
        inline_html = f'<span class="math-display">{tex_html}</span>'
        block_html = f'<div class="math-display">{tex_html}</div>'
        return self.add(inline_html, block_html, source)

    def inline_html(self, index):
        return self.entries[int(index)][0]

    def block_html(self, index):
        return self.entries[int(index)][1]

    def source_html(self, index):
        return self.entries[int(index)][2]


class _MathScanner:
    """Replace math outside code with placeholders, one pass over the text."""

    def __init__(self, text):
        self.text = text
        self.stash = _MathStash()
        self.blank_lines = [m.start() for m in _BLANK_LINE_RE.finditer(text)]

        # A search for a closer that failed up to a paragraph end fails for
        # every later opener of that kind in the same paragraph too; these
        # remember that, which keeps the scan linear on inputs like "$1 $2 $3".
        self.no_closer_before = {}

    def paragraph_end(self, position):
        index = bisect.bisect_left(self.blank_lines, position)
        if index < len(self.blank_lines):
            return self.blank_lines[index]
        return len(self.text)

    def replace_math(self):
        pieces = []
        position = 0

        while True:
            token = _TOKEN_RE.search(self.text, position)
            if token is None:
                break

            replacement, end = self.handle(token)
            pieces.append(self.text[position : token.start()])
            pieces.append(replacement)
            position = end

        pieces.append(self.text[position:])
        return "".join(pieces), self.stash

    def handle(self, token):
        kind = token.lastgroup
        start, end = token.span()

        if kind == "fence":
            fence_end = self.fence_end(token)
            return self.text[start:fence_end], fence_end
        if kind == "ticks":
            return self.code_span(token)
        if kind == "escaped_dollar":
            return self.stash.add_dollar(token.group()), end
        if kind == "escaped":
            return token.group(), end
        if kind == "inline_dollar":
            return self.inline_dollar(start)

        closer = {
            "display_dollar": "$$",
            "display_bracket": "\\]",
            "inline_paren": "\\)",
        }[kind]
        display = kind != "inline_paren"
        return self.delimited(kind, start, end, closer, display)

    def fence_end(self, token):
        fence = token.group("fence").strip()
        closing_re = rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$"
        line_end = self.text.find("\n", token.end())
        if line_end == -1:
            return len(self.text)

        # An unclosed fence runs to the end, as it does while it streams in.
        closing = re.compile(closing_re, re.MULTILINE).search(self.text, line_end + 1)
        return closing.end() if closing else len(self.text)

    def code_span(self, token):
        start, end = token.span()
        length = len(token.group())
        limit = self.paragraph_end(start)
        memo_key = ("ticks", length)
        if self.no_closer_before.get(memo_key, -1) > start:
            return token.group(), end

        closer_re = re.compile(rf"(?<!`)`{{{length}}}(?!`)")
        closer = closer_re.search(self.text, end, limit)
        if closer is None:
            self.no_closer_before[memo_key] = limit
            return token.group(), end

        return self.text[start : closer.end()], closer.end()

    def delimited(self, kind, start, end, closer, display):
        limit = self.paragraph_end(start)
        if self.no_closer_before.get(kind, -1) > start:
            return self.text[start:end], end

        close_at = self.text.find(closer, end, limit)
        if close_at == -1:
            self.no_closer_before[kind] = limit
            return self.text[start:end], end

        tex = self.text[end:close_at]
        source_end = close_at + len(closer)
        if not tex.strip():
            return self.text[start:source_end], source_end

        source = self.text[start:source_end]
        return self.stash.add_math(tex, source, display), source_end

    def inline_dollar(self, start):
        end = start + 1
        limit = self.paragraph_end(start)
        opens_math = end < limit and not self.text[end].isspace()
        if not opens_math or self.no_closer_before.get("$", -1) > start:
            return "$", end

        closer = _INLINE_DOLLAR_CLOSER_RE.search(self.text, end + 1, limit)
        if closer is None:
            self.no_closer_before["$"] = limit
            return "$", end

        source = self.text[start : closer.end()]
        tex = self.text[end : closer.end() - 1]
        return self.stash.add_math(tex, source, display=False), closer.end()


def _restore_math(rendered, stash):
    def source_in(fragment):
        return _PLACEHOLDER_ONLY_RE.sub(
            lambda match: stash.source_html(match.group(1)), fragment
        )

    def restore(match):
        alone, code, tag, inline = match.groups()
        if alone:
            return stash.block_html(alone)
        if inline:
            return stash.inline_html(inline)

        # Inside code or inside a tag's attributes the formula is only text.
        return source_in(code or tag)

    return _RESTORE_RE.sub(restore, rendered)


def _allow_link_href(tag, name, value):
    if name == "href":
        # The value still holds character references (Markdown writes mailto
        # links that way); the browser decodes them, so check the decoded URL.
        # Relative links are refused too: they could point at the app itself.
        url = html.unescape(value).strip().lower()
        return url.startswith(ALLOWED_LINK_SCHEMES)
    return name == "title"


def _allow_cell_align(tag, name, value):
    return name == "align" and value in ("left", "right", "center")


ALLOWED_ATTRIBUTES = {
    "a": _allow_link_href,
    "th": _allow_cell_align,
    "td": _allow_cell_align,
    "code": ["class"],
    "span": ["class"],
    "div": ["class"],
    # Allowed only so that _ImageToAltText can swap it for its alt text; no img
    # element reaches the output.
    "img": ["alt"],
}


class _ImageToAltText(Filter):
    """Show an image as its alt text: loading it could leak data by its URL."""

    def __iter__(self):
        for token in super().__iter__():
            if token["type"] in ("StartTag", "EmptyTag") and token["name"] == "img":
                alt = token["data"].get((None, "alt"), "")
                if alt:
                    yield {"type": "Characters", "data": alt}
            elif token["type"] == "EndTag" and token["name"] == "img":
                continue
            else:
                yield token


class _KnownClassesOnly(Filter):
    """Keep only the class values render.js and highlight.js act on."""

    def __iter__(self):
        for token in super().__iter__():
            if token["type"] == "StartTag" and token["name"] in CLASSED_TAGS:
                self.filter_classes(token)
            yield token

    def filter_classes(self, token):
        attributes = token["data"]
        classes = attributes.pop((None, "class"), "").lower().split()

        if token["name"] == "code":
            kept = [value for value in classes if CODE_CLASS_RE.fullmatch(value)]
        else:
            kept = [value for value in classes if value in MATH_CLASSES]

        if kept:
            attributes[(None, "class")] = " ".join(kept)


class _LinksOpenApart(Filter):
    """Open links in a new tab that cannot reach back into the chat page."""

    def __iter__(self):
        for token in super().__iter__():
            if token["type"] == "StartTag" and token["name"] == "a":
                token["data"][(None, "rel")] = LINK_REL
                token["data"][(None, "target")] = "_blank"
            yield token


def _new_markdown():
    return markdown.Markdown(
        extensions=[
            "fenced_code",
            TableExtension(use_align_attribute=True),
            "sane_lists",
        ]
    )


def _new_cleaner():
    # strip=False shows a disallowed tag as escaped text, so a model writing
    # "<script>" shows exactly that.
    return bleach.Cleaner(
        tags=ALLOWED_TAGS | {"img"},
        attributes=ALLOWED_ATTRIBUTES,
        protocols={"http", "https", "mailto"},
        strip=False,
        strip_comments=True,
        filters=[_ImageToAltText, _KnownClassesOnly, _LinksOpenApart],
    )


# Neither a Markdown instance nor a bleach Cleaner is thread-safe, and both are
# cheaper to reuse than to build for every streamed refresh.
_per_thread = threading.local()


def _renderers():
    if not hasattr(_per_thread, "markdown"):
        _per_thread.markdown = _new_markdown()
        _per_thread.cleaner = _new_cleaner()
    return _per_thread.markdown, _per_thread.cleaner


def render_markdown(text):
    """Render an untrusted Markdown answer, with math, to sanitized HTML."""
    md, cleaner = _renderers()

    protected, stash = _MathScanner(text).replace_math()

    rendered = md.reset().convert(protected)

    with_math = _restore_math(rendered, stash)

    return cleaner.clean(with_math)


def render_plain(text):
    """Escape untrusted text, such as reasoning, for display as-is."""
    return html.escape(text)
