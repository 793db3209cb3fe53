"""The simulator's reading mode: answers made from the paper passages in the
prompt, as the paper-reading feature sends them (academic.reading).

A request whose messages hold a <paper> block is answered from it: one
bullet per passage, its first sentence and its reference, so that a test
sees exactly which passages reached the model and that their references
come back. A prompt that asks for headings ("## Problem" ...) gets each
heading with the bullets shared out under them. A <paper> block with no
passage gets the answer a careful model gives: the paper does not say.
"""

import re

PAPER = re.compile(r"<paper\b[^>]*>(?P<body>.*?)</paper>", re.DOTALL)
PASSAGE = re.compile(
    r'<passage ref="(?P<ref>[^"]*)"[^>]*>\n?(?P<text>.*?)\n?</passage>', re.DOTALL
)
HEADING = re.compile(r"^## .+$", re.MULTILINE)
SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s")
REF = re.compile(r"\[(?:pp?\.\s*\d+|§[^\[\]\n]+)\]")
UNANSWERED = "The paper does not answer this question: no passage of it says so."
FIRST_WORDS = 25


def reply_for(messages):
    """The reading-mode answer to `messages`, or None for any other request."""
    text = "\n".join(_content(message) for message in messages)
    paper = PAPER.search(text)
    if paper is None:
        return None

    passages = list(PASSAGE.finditer(paper["body"]))
    if not passages:
        return UNANSWERED
    bullets = [_bullet(match["ref"], match["text"]) for match in passages]
    headings = HEADING.findall(text)
    if not headings:
        return "\n".join(bullets)
    return _under_headings(headings, bullets)


def _content(message):
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _bullet(ref, text):
    refs = list(dict.fromkeys(REF.findall(text)))
    if refs:
        # Notes: one statement a line. The references go first, as "p."
        # would otherwise end a sentence.
        text = next(line for line in text.splitlines() if REF.search(line))
    plain = " ".join(REF.sub("", text).split())
    first = SENTENCE_END.split(plain, maxsplit=1)[0].lstrip("-* ").strip()
    words = first.split()
    if len(words) > FIRST_WORDS:
        first = " ".join(words[:FIRST_WORDS]) + " …"
    # Notes keep every reference they carry; a passage of the paper gets
    # its own, one bracket for each.
    if not refs:
        refs = [f"[{one.strip()}]" for one in ref.split(";") if one.strip()]
    return f"- {first} {' '.join(refs)}"


def _under_headings(headings, bullets):
    sections = {heading: [] for heading in headings}
    for index, bullet in enumerate(bullets):
        sections[headings[index % len(headings)]].append(bullet)
    parts = []
    for heading, under in sections.items():
        parts.append(heading)
        parts.append("\n".join(under or [bullets[0]]))
    return "\n\n".join(parts)
