"""Finding a user's messages by the words in them.

Matching is by substring, case-insensitive, every word of the query
required. That is what a researcher expects for Chinese as much as for
English: a tokenising full-text engine would need a Chinese word segmenter
in the database to find 注意力 inside 自注意力机制, and substring matching
needs none. On PostgreSQL a trigram index (migration 0005) keeps it fast;
on SQLite it is a scan of the user's own messages, which is fine at the
size of one person's history.
"""

import html
import re

from django.db.models import Q
from django.utils.safestring import mark_safe

from chat.models import Message

MAX_TERMS = 8
MAX_QUERY_CHARS = 200
SNIPPET_CONTEXT_CHARS = 60


def query_terms(query):
    """The words of a query, at most MAX_TERMS, duplicates dropped."""
    terms = []
    for term in query[:MAX_QUERY_CHARS].split():
        if term.casefold() not in (t.casefold() for t in terms):
            terms.append(term)
    return terms[:MAX_TERMS]


def search_messages(user, terms, include_reasoning=False):
    """The user's messages holding every term, newest first."""
    messages = Message.objects.filter(
        conversation__user=user, conversation__deleted_at__isnull=True
    )
    for term in terms:
        matches = Q(content__icontains=term)
        if include_reasoning:
            matches |= Q(reasoning__icontains=term)
        messages = messages.filter(matches)
    return messages.select_related("conversation").order_by("-created", "-id")


def snippet(message, terms, include_reasoning=False):
    """The passage around the first match, as HTML with the terms marked.

    Returns (html, found_in_reasoning). The text is escaped before the marks
    go in, so nothing of the message can become markup.
    """
    pattern = _terms_pattern(terms)
    source, in_reasoning = message.content, False
    if include_reasoning and not pattern.search(source):
        source, in_reasoning = message.reasoning, True

    found = pattern.search(source)
    start = max(0, found.start() - SNIPPET_CONTEXT_CHARS) if found else 0
    end = min(len(source), (found.end() if found else 0) + SNIPPET_CONTEXT_CHARS * 2)
    passage = " ".join(source[start:end].split())
    marked = _mark(passage, pattern)
    if start > 0:
        marked = "…" + marked
    if end < len(source):
        marked += "…"
    return mark_safe(marked), in_reasoning


def _terms_pattern(terms):
    longest_first = sorted(terms, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in longest_first), re.IGNORECASE)


def _mark(passage, pattern):
    pieces = []
    position = 0
    for match in pattern.finditer(passage):
        pieces.append(html.escape(passage[position : match.start()]))
        pieces.append(f"<mark>{html.escape(match.group())}</mark>")
        position = match.end()
    pieces.append(html.escape(passage[position:]))
    return "".join(pieces)
