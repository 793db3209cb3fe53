"""The XSS corpus, delivered everywhere a user's page shows untrusted text.

Each payload of tests/security/xss_payloads.txt calls window.__xss_hit(n)
if it runs. The test defines that sentinel before any page script, counts
dialogs, and after each page scans the DOM for what could still run: event
handler attributes, script URLs, stray script, iframe, object, embed, base
or meta refresh elements. The same detector is shown to fire on the
unsanitised corpus (the positive control), so a clean result means
something.

The corpus goes in as model answers and reasoning streamed in chunks that
cut tags apart, as stored answers, reasoning and titles of imported
conversations (room, sidebar, conversation list, shared link), as search
terms, as attachment file names and as the file names of a polish project.
Content-Security-Policy violations are counted too and must stay at zero:
the sanitiser and the templates stop the payloads, the policy is only the
second wall.
"""

import io
import json
import zipfile

import pytest

from tests.browser.conftest import sign_in
from tests.browser.test_chat_browser import last_reply, send
from tests.security.corpus import payloads

pytestmark = pytest.mark.browser

CORPUS = payloads()
CHUNK_CHARS = 5

SENTINEL_SCRIPT = """
window.__xss_hits = [];
window.__xss_hit = function (n) { window.__xss_hits.push(n); };
window.__csp_violations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.__csp_violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""

LIVE_MARKUP_SCAN = """
() => {
  const found = [];
  const urlAttributes = ["href", "src", "action", "formaction", "xlink:href",
                         "data", "srcdoc", "background"];
  const scriptUrl = /^(javascript:|vbscript:|data:text\\/html)/;
  for (const element of document.querySelectorAll("*")) {
    for (const attribute of element.attributes) {
      const name = attribute.name.toLowerCase();
      const value = attribute.value.replace(/\\s/g, "").toLowerCase();
      if (name.startsWith("on")) {
        found.push(element.tagName + " " + name);
      }
      if (urlAttributes.includes(name) && scriptUrl.test(value)) {
        found.push(element.tagName + " " + name + "=" + attribute.value);
      }
      if (name === "srcdoc") {
        found.push(element.tagName + " srcdoc");
      }
    }
  }
  const stray = "iframe, object, embed, base, meta[http-equiv], " +
    "script:not([src]):not([type='application/json']), " +
    "script[src^='data:'], script[src^='javascript:']";
  for (const element of document.querySelectorAll(stray)) {
    found.push("<" + element.tagName.toLowerCase() + ">");
  }
  return found;
}
"""


@pytest.fixture
def watched(page):
    page.add_init_script(SENTINEL_SCRIPT)
    return page


def verdict(page):
    """What ran, what could run, and what the policy had to block."""
    return {
        "hits": page.evaluate("window.__xss_hits || []"),
        "live": page.evaluate(LIVE_MARKUP_SCAN),
        "csp": page.evaluate("window.__csp_violations || []"),
        "dialogs": list(page.dialogs),
    }


def assert_inert(page, where):
    found = verdict(page)
    assert found == {"hits": [], "live": [], "csp": [], "dialogs": []}, where


def test_the_detector_catches_the_unsanitised_corpus(watched):
    """The positive control: the corpus put straight into a page without a
    policy or a sanitiser runs, and the detector sees it."""
    markup = "\n".join(f"<div>{text}</div>" for _number, text in CORPUS)
    watched.route(
        "http://control.invalid/",
        lambda route: route.fulfill(
            content_type="text/html", body=f"<html><body>{markup}</body></html>"
        ),
    )
    watched.goto("http://control.invalid/")
    watched.wait_for_timeout(1000)

    found = verdict(watched)

    assert len(set(found["hits"])) >= 10
    assert any("onerror" in item for item in found["live"])
    assert any("javascript:" in item for item in found["live"])


def test_it_streams_the_corpus_as_answer_and_reasoning_inert(watched, simulator):
    sign_in(watched)
    text = "\n\n".join(text for _number, text in CORPUS)
    simulator.queue_events(streamed_events(text))

    send(watched, "show me the corpus", model="deepseek-r1")
    wait_for_long_reply(watched)
    reply = last_reply(watched)
    reply.locator("details.reasoning summary").click()

    assert "__xss_hit(" in reply.locator(".answer").inner_text()
    assert "__xss_hit(" in reply.locator(".reasoning-text").text_content()
    assert_inert(watched, "streamed reply")

    watched.reload()
    last_reply(watched).locator(".answer").wait_for()
    assert_inert(watched, "stored reply after a reload")


def test_it_streams_the_corpus_between_think_tags_inert(watched, simulator):
    """Reasoning written inline, as some servers send R1's, with the tags
    themselves cut across chunks."""
    sign_in(watched)
    text = "\n\n".join(text for _number, text in CORPUS)
    inline = f"<think>\n{text}\n</think>\n\n{text}"
    events = [
        _chunk({"content": inline[start : start + CHUNK_CHARS]}, None)
        for start in range(0, len(inline), CHUNK_CHARS)
    ]
    simulator.queue_events([*events, _chunk({}, "stop"), "[DONE]"])

    send(watched, "show me the corpus", model="deepseek-r1-tags")
    wait_for_long_reply(watched)
    reply = last_reply(watched)

    assert "__xss_hit(" in reply.locator(".reasoning-text").text_content()
    assert "__xss_hit(" in reply.locator(".answer").inner_text()
    assert_inert(watched, "reply with inline reasoning")


def wait_for_long_reply(page):
    # Thousands of small chunks, each rendered as it comes: on a loaded
    # machine that takes longer than the default wait.
    page.wait_for_selector(
        "article.message.assistant:last-child:not(.is-open)", timeout=180_000
    )


def streamed_events(text):
    """The reply as an OpenAI-compatible stream, in chunks of a few
    characters, so that tags arrive cut apart."""
    events = []
    for field in ("reasoning_content", "content"):
        for start in range(0, len(text), CHUNK_CHARS):
            delta = {field: text[start : start + CHUNK_CHARS]}
            events.append(_chunk(delta, None))
    events.append(_chunk({}, "stop"))
    events.append("[DONE]")
    return events


def _chunk(delta, finish_reason):
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return json.dumps({"choices": [choice]})


def test_it_shows_imported_titles_answers_and_reasoning_inert(watched):
    sign_in(watched)
    watched.goto("/conversations/")
    watched.set_input_files(
        "[data-import-file]",
        {
            "name": "corpus.zip",
            "mimeType": "application/zip",
            "buffer": corpus_archive(),
        },
    )
    watched.click("[data-import]")
    watched.wait_for_url("**/conversations/")

    assert watched.locator(".conversation-list a").count() >= 100
    assert_inert(watched, "conversation list")
    watched.goto("/conversations/?page=2")
    assert_inert(watched, "conversation list, page 2")

    watched.goto("/")
    assert_inert(watched, "sidebar")

    # An imported one: earlier tests' chats of the same user may be newer.
    watched.locator(".conversation-list a", has_text="__xss_hit(").first.click()
    watched.wait_for_selector("html[data-chat-ready]", state="attached")
    assert watched.locator("article.message.assistant").count() >= 1
    assert_inert(watched, "conversation page")

    watched.click("[data-share-menu]")
    watched.click("form[action$='/share/'] button")
    share_url = watched.locator("[data-share-url]").input_value()
    watched.goto(share_url)
    assert "__xss_hit(" in watched.content()
    assert_inert(watched, "shared link")


def corpus_archive():
    """A zip of exported conversations: one per payload as its title, and
    its answer, reasoning and question."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for number, text in CORPUS:
            archive.writestr(f"{number}.json", json.dumps(exported(text)))
    return buffer.getvalue()


def exported(text):
    message = {"content": text, "reasoning": "", "model": "deepseek-r1"}
    return {
        "format": "research-assistant.conversation",
        "version": 1,
        "title": text[:200],
        "model": "deepseek-r1",
        "pinned": False,
        "messages": [
            {**message, "role": "user", "status": "stop"},
            {**message, "role": "assistant", "status": "stop", "reasoning": text},
        ],
    }


def test_it_shows_the_corpus_as_search_terms_inert(watched):
    sign_in(watched)

    for number, text in CORPUS:
        watched.goto(f"/search/?q={_quoted(text)}")
        assert_inert(watched, f"search for payload {number}")


def _quoted(text):
    from urllib.parse import quote

    return quote(text, safe="")


def test_it_shows_attachment_file_names_inert(watched):
    sign_in(watched)
    names = [f"{text}.txt".replace("/", "_") for _number, text in CORPUS]
    batch = 10

    for start in range(0, len(names), batch):
        files = [
            {"name": name, "mimeType": "text/plain", "buffer": b"notes"}
            for name in names[start : start + batch]
        ]
        watched.set_input_files("[data-attach-input]", files)
        # Ten uploads at once, each read and decoded by the server: on a
        # loaded machine a batch has taken over 20 s.
        watched.wait_for_function(
            "n => document.querySelectorAll('[data-attachment-chips] "
            ".attachment-chip').length >= n",
            arg=min(start + batch, len(names)),
            timeout=90_000,
        )

    assert "__xss_hit(" in watched.locator("[data-attachment-chips]").inner_text()
    assert_inert(watched, "attachment chips")


def test_it_shows_polish_project_file_names_inert(watched):
    """A project's .tex files that the main file does not reach are listed
    by name on the job's page."""
    sign_in(watched)
    watched.goto("/academic/")
    token = next(
        c["value"] for c in watched.context.cookies() if c["name"] == "csrftoken"
    )

    response = watched.request.post(
        "/academic/",
        headers={"X-CSRFToken": token},
        multipart={
            "file": {
                "name": f"{CORPUS[0][1].replace('/', '_')}.zip",
                "mimeType": "application/zip",
                "buffer": project_archive(),
            },
            "task": "polish",
            "preset": "journal",
            "model": "deepseek-v3",
            "source_kind": "latex",
        },
    )
    assert response.ok, response.text()
    job_url = response.url
    assert "/academic/" in job_url and job_url.rstrip("/").split("/")[-1].isdigit()

    watched.goto(job_url)
    assert "__xss_hit(" in watched.content()
    assert_inert(watched, "polish job page")
    watched.goto("/academic/")
    assert_inert(watched, "polish home with the job listed")


def project_archive():
    buffer = io.BytesIO()
    main = b"\\documentclass{article}\\begin{document}Text.\\end{document}"
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("main.tex", main)
        for _number, text in CORPUS:
            name = text.replace("/", "_").replace("\\", "_").lstrip(".")
            archive.writestr(f"{name}.tex", b"\\section{x}")
    return buffer.getvalue()
