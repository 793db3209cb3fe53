"""The XSS corpus (xss_payloads.txt) and a check of HTML for live script."""

from html.parser import HTMLParser
from pathlib import Path

CORPUS_FILE = Path(__file__).with_name("xss_payloads.txt")
SENTINEL = "__xss_hit"

# Where a URL could run script when followed or loaded.
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data"}
SCRIPT_SCHEMES = ("javascript:", "vbscript:", "data:text/html")


def payloads():
    """[(number, payload)], the sentinel call put in for HIT."""
    found = []
    lines = CORPUS_FILE.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        found.append((number, line.replace("HIT", f"{SENTINEL}({number})")))
    return found


class _LiveMarkupFinder(HTMLParser):
    def __init__(self, allowed_tags):
        super().__init__(convert_charrefs=True)
        self.allowed_tags = allowed_tags
        self.problems = []

    def handle_starttag(self, tag, attrs):
        if tag not in self.allowed_tags:
            self.problems.append(f"<{tag}> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"{name} attribute on <{tag}>")
            url = "".join((value or "").split()).lower()
            if name in URL_ATTRIBUTES and url.startswith(SCRIPT_SCHEMES):
                self.problems.append(f"{name}={value!r} on <{tag}>")
            if name == "style" and "url(" in (value or "").lower():
                self.problems.append(f"style with a URL on <{tag}>")

    handle_startendtag = handle_starttag


def live_markup(html, allowed_tags):
    """What in `html` could run script: elements outside the allow-list,
    event handler attributes, script URLs."""
    finder = _LiveMarkupFinder(allowed_tags)
    finder.feed(html)
    finder.close()
    return finder.problems
