"""Read a formula or a table from a picture with a vision model.

The picture goes to the OpenAI-compatible API as a base64 PNG data URI in an
`image_url` part: never as an http URL, which would hand the image to
whoever serves that URL and make the backend fetch from the outside. The
request asks at temperature 0 (the same picture should give the same
source) with a prompt for the chosen output, and the reply is cleaned of
what models add around the source anyway: a code fence, and for formulas
math delimiters, since the app adds the wrapper the user asked for itself.

An optional offline engine reads formulas on this machine
(academic.ocr_engine); academic.tasks decides which engine answers.
"""

import base64
import logging
import re
import time
from dataclasses import dataclass

import openai
from django.utils.translation import gettext_lazy as _

from assistant import backoff, failures
from assistant.modelapi import client_for_model

logger = logging.getLogger(__name__)

FORMULA = "formula"
TABLE = "table"
LATEX = "latex"
MARKDOWN = "markdown"
HTML = "html"

# An image request is answered in seconds when the backend has room; a
# minute and a half without an answer is a stuck backend, not a slow one.
REQUEST_TIMEOUT_SECONDS = 90.0
MAX_OUTPUT_TOKENS = {FORMULA: 1024, TABLE: 4096}
NO_FORMULA = "NO_FORMULA"
NO_TABLE = "NO_TABLE"

_FORMULA_PROMPT = (
    "Transcribe the mathematical formula in the image into LaTeX. Reply with "
    "the LaTeX source only: no $ or \\[ delimiters, no equation environment, "
    "no explanation. Keep its structure with the usual amsmath commands "
    "(\\frac, matrices, cases, aligned). If the image holds no formula, reply "
    f"with exactly {NO_FORMULA}."
)
_NO_TABLE_RULE = f" If the image holds no table, reply with exactly {NO_TABLE}."
PROMPTS = {
    (FORMULA, LATEX): _FORMULA_PROMPT,
    (FORMULA, MARKDOWN): _FORMULA_PROMPT,
    (TABLE, LATEX): (
        "Transcribe the table in the image into a LaTeX tabular environment. "
        "If the image shows horizontal rules, use booktabs (\\toprule, "
        "\\midrule, \\bottomrule); otherwise draw no rules. Keep merged cells "
        "with \\multicolumn and \\multirow, and write math in cells as $...$. "
        "Reply with the tabular environment only, no table float, no "
        "explanation." + _NO_TABLE_RULE
    ),
    (TABLE, MARKDOWN): (
        "Transcribe the table in the image into a Markdown pipe table, with "
        "the header row first and a separator row under it. Markdown cannot "
        "merge cells: repeat a merged cell's text in every cell it spans. "
        "Write math in cells as $...$. Reply with the pipe table only, no "
        "explanation." + _NO_TABLE_RULE
    ),
    (TABLE, HTML): (
        "Transcribe the table in the image into an HTML <table> with <thead> "
        "and <tbody>. Keep merged cells with colspan and rowspan. Use no "
        "attributes other than colspan and rowspan, no styles. Reply with the "
        "table element only, no explanation." + _NO_TABLE_RULE
    ),
}

MESSAGES = {
    "no_vision_model": _(
        "No model that reads images is configured. Ask the administrator to "
        "serve a vision model and tick “reads images” in its model profile."
    ),
    "no_formula": _(
        "The model found no formula in the image. Crop the image to the "
        "formula, or choose “table” if it is a table."
    ),
    "no_table": _(
        "The model found no table in the image. Crop the image to the table, "
        "or choose “formula” if it is a formula."
    ),
    "empty_reply": _("The model sent an empty answer. Convert the image again."),
    "offline_empty": _(
        "The offline formula engine read nothing from the image. Crop the "
        "image to the formula; if it is a table, choose “table”."
    ),
    "tables_need_vision_model": _(
        "Tables are read only by a model that reads images, and none is "
        "configured. Choose “formula” for a formula, or ask the administrator "
        "to serve a vision model."
    ),
    "rate_limited": _(
        "The model service is busy and asked the app to slow down (429). Your "
        "image is kept; convert it again in a few minutes."
    ),
    "overloaded": _(
        "The model service is overloaded (503). Your image is kept; convert it "
        "again in a few minutes."
    ),
    "unreachable": _(
        "The model service cannot be reached right now. Your image is kept; "
        "convert it again in a moment."
    ),
    "timeout": _(
        "The model service did not answer in time. Your image is kept; convert "
        "it again, perhaps later when it is less busy."
    ),
    "queue_timeout": _(
        "The model was busy for longer than the app waits in its queue. Your "
        "image is kept; convert it again later."
    ),
    "quota_daily": _(
        "Your daily token quota is used up. Your image is kept; your usage "
        "page says when the quota resets."
    ),
    "quota_monthly": _(
        "Your monthly token quota is used up. Your image is kept; your usage "
        "page says when the quota resets."
    ),
    # The figures are in the conversion's error detail; a conversion keeps
    # no parameters for its message, as a chat reply does.
    "quota_concurrent": _(
        "You already have as many requests queued or running (chat replies, "
        "polishing, conversions) as your quota allows at once. Your image is "
        "kept; convert it again when one of them has finished."
    ),
}

_FENCE = re.compile(r"```[^\n`]*\n(?P<body>.*?)\n?```", re.DOTALL)
# Delimiters around a whole formula: $$..$$, \[..\], $..$, \(..\), and the
# equation and displaymath environments.
_WRAPPED = re.compile(
    r"\A(?:\$\$(?P<a>.*)\$\$|\\\[(?P<b>.*)\\\]|\$(?P<c>[^$]*)\$|\\\((?P<d>.*)\\\)"
    r"|\\begin\{(?P<env>equation\*?|displaymath)\}(?P<e>.*)\\end\{(?P=env)\})\Z",
    re.DOTALL,
)


def describe(code):
    """The translated explanation of a failed conversion's error code."""
    return MESSAGES.get(code) or failures.describe(code)


class ConversionFailed(Exception):
    def __init__(self, code, detail=""):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Transcription:
    source: str
    prompt_tokens: int | None
    completion_tokens: int | None


def data_uri(png):
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def build_messages(png, kind, target):
    content = [
        {"type": "text", "text": PROMPTS[(kind, target)]},
        {"type": "image_url", "image_url": {"url": data_uri(png)}},
    ]
    return [{"role": "user", "content": content}]


def strip_fence(text):
    """The body of the first code fence in the reply, or the reply itself."""
    match = _FENCE.search(text)
    return (match.group("body") if match else text).strip()


def strip_math_delimiters(text):
    """A formula without the delimiters a model put around all of it."""
    match = _WRAPPED.match(text.strip())
    if match is None:
        return text.strip()
    groups = match.groupdict()
    groups.pop("env")
    return next(body for body in groups.values() if body is not None).strip()


def clean_reply(text, kind):
    """The source in a model's reply; ConversionFailed when it holds none."""
    source = strip_fence(text or "")
    if kind == FORMULA:
        source = strip_math_delimiters(source)

    if not source:
        raise ConversionFailed("empty_reply")
    if source in (NO_FORMULA, NO_TABLE):
        raise ConversionFailed("no_formula" if kind == FORMULA else "no_table")
    return source


def transcribe(png, model, kind, target, max_output_tokens=None):
    """Ask `model` for the source of the picture; raises ConversionFailed.

    A busy server (429, 503) is asked again after the same growing waits as
    chat (assistant.backoff); the caller holds its admission slot meanwhile.
    """
    limit = MAX_OUTPUT_TOKENS[kind]
    if max_output_tokens:
        limit = min(limit, max_output_tokens)
    messages = build_messages(png, kind, target)

    completion = _complete(model, messages, limit)
    if not completion.choices:
        raise ConversionFailed("empty_reply")

    source = clean_reply(completion.choices[0].message.content, kind)
    usage = completion.usage
    return Transcription(
        source,
        usage.prompt_tokens if usage else None,
        usage.completion_tokens if usage else None,
    )


def _complete(model, messages, max_tokens):
    client = client_for_model(model).with_options(timeout=REQUEST_TIMEOUT_SECONDS)
    refusals = 0
    while True:
        try:
            return client.chat.completions.create(
                model=model, messages=messages, temperature=0, max_tokens=max_tokens
            )
        except openai.APIStatusError as exc:
            refusals += 1
            wait = backoff.next_wait(exc, refusals) if backoff.is_busy(exc) else None
            if wait is None:
                raise ConversionFailed(*failures.classify(exc)) from exc
            logger.warning(
                "image request to %s refused (%s), asking again in %.1f s",
                model,
                exc.status_code,
                wait,
            )
            time.sleep(wait)
        except Exception as exc:  # noqa: BLE001 - every failure gets a message
            raise ConversionFailed(*failures.classify(exc)) from exc
