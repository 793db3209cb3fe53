"""Every payload of the XSS corpus comes out of the sanitiser inert.

The browser tests (tests/browser/test_xss_browser.py) check the same corpus
where it is shown; this checks the server's part alone, payload by payload,
so that the sanitiser and not the Content-Security-Policy is what stops
them.
"""

import pytest

from chat.rendering import ALLOWED_TAGS, render_markdown
from tests.security.corpus import SENTINEL, live_markup, payloads

CORPUS = payloads()


def test_it_has_at_least_a_hundred_payloads():
    assert len(CORPUS) >= 100
    assert all(
        SENTINEL in text or "&#" in text or "base64" in text for _n, text in CORPUS
    )


@pytest.mark.parametrize("number, payload", CORPUS, ids=[str(n) for n, _ in CORPUS])
def test_it_renders_each_payload_inert(number, payload):
    html = render_markdown(payload)

    assert live_markup(html, ALLOWED_TAGS) == []


@pytest.mark.parametrize("number, payload", CORPUS, ids=[str(n) for n, _ in CORPUS])
def test_it_renders_each_payload_inert_cut_anywhere(number, payload):
    """A streaming answer is rendered again at every refresh, often with a
    tag cut in half; every prefix must be inert too."""
    for end in range(1, len(payload) + 1, 3):
        html = render_markdown(payload[:end])
        assert live_markup(html, ALLOWED_TAGS) == [], payload[:end]


def test_the_check_finds_live_markup():
    """The detector is not empty: unsanitised payloads fail it."""
    raw = [text for _n, text in CORPUS[:20]]

    assert all(live_markup(text, ALLOWED_TAGS) for text in raw if "<" in text)
    assert live_markup('<a href=" javascript:x()">', ALLOWED_TAGS)
