"""Waiting out a model server that answers "busy" (429 or 503) before a reply.

Such a server has not started the reply, so asking again loses nothing. The
wait grows exponentially with each refusal and is jittered, so that the
workers refused at the same moment do not all come back at the same moment;
it is never shorter than the server's Retry-After. After
MODEL_API_BUSY_RETRIES refusals, or when the server asks for a longer wait
than MODEL_API_BUSY_MAX_WAIT, the caller gives up and the user reads why.
"""

import random
import time
from email.utils import parsedate_to_datetime

import openai
from django.conf import settings

BUSY_STATUSES = {429, 503}
# The first wait without a Retry-After is between half and all of this.
FIRST_WAIT_SECONDS = 2.0


def is_busy(exc):
    """Did the server refuse for now, rather than for good?"""
    return isinstance(exc, openai.APIStatusError) and exc.status_code in BUSY_STATUSES


def retry_after_seconds(exc, now=None):
    """The server's Retry-After in seconds, or None when absent or unreadable.

    The header holds either a number of seconds or an HTTP date.
    """
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    if not value:
        return None

    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until_date(value, now)
    if seconds is None or seconds != seconds:  # absent, or NaN
        return None
    return max(0.0, seconds)


def _seconds_until_date(value, now):
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = time.time() if now is None else now
    return moment.timestamp() - now


def next_wait(exc, refusals, rng=random):
    """Seconds to wait before asking again, or None to give up.

    `refusals` counts the busy answers so far, this one included.
    """
    if refusals > settings.MODEL_API_BUSY_RETRIES:
        return None

    ceiling = min(
        settings.MODEL_API_BUSY_MAX_WAIT, FIRST_WAIT_SECONDS * 2 ** (refusals - 1)
    )
    wait = rng.uniform(ceiling / 2, ceiling)

    asked = retry_after_seconds(exc)
    if asked is not None:
        if asked > settings.MODEL_API_BUSY_MAX_WAIT:
            return None
        # Never sooner than asked; the jitter on top spreads the workers
        # that were all told the same moment.
        wait = max(wait, asked + rng.uniform(0, min(1.0, asked / 5 + 0.2)))
    return wait
