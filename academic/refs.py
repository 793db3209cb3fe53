"""A model's text about a paper as safe HTML, its references made links.

The answer is rendered and sanitised by chat.rendering first, like every
model answer. Only then are "[p. 4]" and "[§ Methods]" in its text turned
into links to the extracted text's anchors, by a filter over the sanitised
HTML's text nodes: the links are built here, never taken from the model,
and code, preformatted text and existing links are left alone.
"""

import re

import bleach
from bleach.html5lib_shim import Filter

from chat import rendering

REF_IN_TEXT = re.compile(
    r"\[((?:pp?\.\s*\d+(?:\s*[-–]\s*\d+)?)|(?:§\s*[^\[\]\n]{1,80}))\]"
)
PAGE_REF = re.compile(r"pp?\.\s*(\d+)")
SECTION_REF = re.compile(r"§\s*(.+)")
SKIPPED_TAGS = frozenset({"code", "pre", "a"})


def render_with_refs(text, sections, page_count):
    """Sanitised HTML of the Markdown `text`, references linked.

    `sections` are the paper's PaperSection rows; `page_count` the number
    of pages a PDF had (0 for other sources).
    """
    resolver = _Resolver(sections, page_count)
    safe_html = rendering.render_markdown(text)
    cleaner = bleach.Cleaner(
        tags=rendering.ALLOWED_TAGS,
        attributes={**rendering.ALLOWED_ATTRIBUTES, "a": ["href", "rel", "target"]},
        protocols={"http", "https", "mailto"},
        strip=False,
        filters=[lambda source: _RefLinks(source, resolver)],
    )
    return cleaner.clean(safe_html)


class _Resolver:
    def __init__(self, sections, page_count):
        self.page_count = page_count
        self.by_title = {}
        self.by_position = {}
        for section in sections:
            self.by_position[str(section.number)] = section.anchor
            self.by_title.setdefault(_normal(section.label), section.anchor)

    def anchor(self, ref):
        page = PAGE_REF.match(ref)
        if page:
            number = int(page[1])
            return f"page-{number}" if 1 <= number <= self.page_count else None

        section = SECTION_REF.match(ref)
        if section is None:
            return None
        name = _normal(section[1])
        if name in self.by_title:
            return self.by_title[name]
        # "§ 3" for "3 Results", or the title without its number.
        for title, anchor in self.by_title.items():
            if title.startswith(name + " ") or title.endswith(" " + name):
                return anchor
        # A summary written before references named sections as the paper
        # does may cite an untitled one by its place in the list.
        return self.by_position.get(name)


def _normal(text):
    return " ".join(text.split()).lower()


class _RefLinks(Filter):
    def __init__(self, source, resolver):
        super().__init__(source)
        self.resolver = resolver

    def __iter__(self):
        skipping = 0
        for token in super().__iter__():
            kind = token["type"]
            if kind == "StartTag" and token["name"] in SKIPPED_TAGS:
                skipping += 1
            elif kind == "EndTag" and token["name"] in SKIPPED_TAGS:
                skipping = max(0, skipping - 1)
            elif kind == "Characters" and not skipping:
                yield from self._link(token["data"])
                continue
            yield token

    def _link(self, text):
        position = 0
        for match in REF_IN_TEXT.finditer(text):
            anchor = self.resolver.anchor(match[1])
            if anchor is None:
                continue
            if match.start() > position:
                yield {"type": "Characters", "data": text[position : match.start()]}
            yield {
                "type": "StartTag",
                "name": "a",
                "namespace": None,
                "data": {
                    (None, "href"): f"#{anchor}",
                    (None, "class"): "paper-ref",
                },
            }
            yield {"type": "Characters", "data": match[0]}
            yield {"type": "EndTag", "name": "a", "namespace": None}
            position = match.end()
        if position < len(text):
            yield {"type": "Characters", "data": text[position:]}
