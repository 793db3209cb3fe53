"""What went wrong with a model request, in words a researcher can act on.

Every failure is reduced to a short code that is stored with the message and
a detail that keeps the server's own words. The code picks the translated
explanation, so a reply that failed yesterday reads right in either language.
"""

import re

import openai
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

try:  # openai 3 ships its HTTP client as httpx2; earlier releases used httpx.
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx

TRANSPORT_ERRORS = (httpx.TransportError, httpx.StreamError)
TIMEOUT_ERRORS = (httpx.TimeoutException,)

# vLLM: "This model's maximum context length is 8192 tokens. However, you
# requested 8700 tokens"; also "context limit 8192 tokens; request needs ...";
# llama.cpp: "request (2117 tokens) exceeds the available context size (2048
# tokens)", error type exceed_context_size_error.
CONTEXT_OVERFLOW = re.compile(
    r"context (length|limit|window|size)|exceed_context_size|too many tokens"
    r"|prompt is too long",
    re.IGNORECASE,
)

MESSAGES = {
    "not_configured": _(
        "The model service is not configured. Ask the administrator to set "
        "MODEL_API_BASE_URL."
    ),
    "unreachable": _(
        "The model service cannot be reached right now. Your message is kept; "
        "send it again in a moment."
    ),
    "timeout": _(
        "The model service did not answer in time. Your message is kept; send "
        "it again, perhaps later when it is less busy."
    ),
    "auth": _(
        "The model service refused the app's credentials (401). Please tell the "
        "administrator; your message is kept."
    ),
    "timeout_first_token": _(
        "The model did not start answering within the time limit; the service "
        "may be overloaded. Your message is kept; send it again later."
    ),
    "timeout_idle": _(
        "The model stopped sending text in the middle of the reply. The text so "
        "far is kept; retry to get a whole answer."
    ),
    "timeout_total": _(
        "The reply took longer than the app allows for one answer and was ended. "
        "The text so far is kept."
    ),
    "queue_timeout": _(
        "The model was busy for longer than the app waits in its queue. Your "
        "message is kept; send it again later."
    ),
    "quota_daily": _(
        "You have reached your daily token quota: %(left)s of %(limit)s tokens "
        "are left today, and this message needs about %(needed)s. It resets at "
        "%(resets)s (%(zone)s). Your message is kept; send it again then."
    ),
    "quota_monthly": _(
        "You have reached your monthly token quota: %(left)s of %(limit)s "
        "tokens are left this month, and this message needs about %(needed)s. "
        "It resets at %(resets)s (%(zone)s). Your message is kept; send it "
        "again then, or ask the administrators for a larger quota."
    ),
    # Filled in by the page's script, which has no plural forms: worded to
    # read right whatever the counts.
    "quota_concurrent": _(
        "Your quota allows this many requests queued or running at once (chat "
        "replies, polishing, conversions): %(limit)s, and you have %(open)s. "
        "Your message is kept; send it again when one of them has finished."
    ),
    "not_found": _("The model service does not serve the chosen model any more."),
    "rate_limited": _(
        "The model service is busy and asked the app to slow down (429); it was "
        "still busy when the app asked again. Your message is kept; send it "
        "again in a few minutes."
    ),
    "overloaded": _(
        "The model service is overloaded (503) and still was when the app asked "
        "again. Your message is kept; send it again in a few minutes."
    ),
    "server_error": _(
        "The model service failed with an internal error. Your message is kept; "
        "send it again."
    ),
    "bad_request": _("The model service rejected the request."),
    "context_overflow": _(
        "The conversation is too long for this model. Start a new chat, shorten "
        "your message, or choose a model with a larger context."
    ),
    "input_too_long": _(
        "Your message and the conversation before it come to about "
        "%(estimate)s tokens, and %(model)s accepts %(limit)s, so nothing was "
        "sent. Leave out older turns, start a new chat, shorten your message, "
        "or choose a model with a larger context."
    ),
    "in_band": _("The model service reported an error in the middle of the reply."),
    "protocol": _("The model service sent a reply the app could not read."),
    "internal": _("Something went wrong in the app. The error has been logged."),
}


def describe(code):
    """The translated explanation for a stored error code."""
    return MESSAGES.get(code, MESSAGES["internal"])


# Codes whose detail is the model service's own words; the others carry the
# app's.
SERVER_DETAIL_CODES = {
    "unreachable",
    "auth",
    "not_found",
    "rate_limited",
    "overloaded",
    "server_error",
    "bad_request",
    "context_overflow",
    "in_band",
    "protocol",
}


def classify(exc):
    """(code, detail) for an exception raised by a model request."""
    if isinstance(exc, ImproperlyConfigured):
        return "not_configured", str(exc)
    if isinstance(exc, openai.APITimeoutError) or isinstance(exc, TIMEOUT_ERRORS):
        return "timeout", ""
    if isinstance(exc, openai.APIConnectionError):
        return "unreachable", _cause_text(exc)
    if isinstance(exc, openai.APIStatusError):
        return _classify_status(exc.status_code, server_message(exc)), server_message(
            exc
        )
    if isinstance(exc, TRANSPORT_ERRORS):
        return "unreachable", str(exc)
    return "internal", exc.__class__.__name__


def _classify_status(status, message):
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status == 503:
        return "overloaded"
    if status >= 500:
        return "server_error"
    if CONTEXT_OVERFLOW.search(message or ""):
        return "context_overflow"
    return "bad_request"


def server_message(exc):
    """The server's own words from an SDK status error, without the noise."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("message"):
            return str(body["message"])
    return getattr(exc, "message", "") or str(exc)


def _cause_text(exc):
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause else ""
