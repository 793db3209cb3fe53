"""One usage record, and one log line, per request to a model.

Every feature that asks a model something (chat, polish, convert, the API)
ends each request by calling record_request(), on every path: finished,
stopped, failed, refused before sending. The record keeps the server's token
counts as reported (None stays None: unknown is not zero) beside
counted_tokens, the figure quotas are charged.
"""

import logging
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from assistant.backends import connection_for_model
from assistant.models import ModelProfile, UsageRecord

logger = logging.getLogger(__name__)


def counted_tokens(
    prompt_tokens=None,
    completion_tokens=None,
    estimated_prompt_tokens=None,
    estimated_output_tokens=None,
):
    """What a request costs against the quotas: prompt plus completion.

    The server's counts when it gave them. Reasoning is not added: DeepSeek
    (and vLLM, and OpenAI) count it inside completion_tokens, so adding
    reasoning_tokens would charge it twice. Where the server said nothing
    (a reply stopped or cut before the final usage chunk, a server that
    never reports usage), the caller's estimates stand in, so that stopping
    a long reply is not a way round the quota; a request the model never
    started on carries no estimate and costs nothing.
    """
    prompt = prompt_tokens if prompt_tokens is not None else estimated_prompt_tokens
    output = (
        completion_tokens if completion_tokens is not None else estimated_output_tokens
    )
    return (prompt or 0) + (output or 0)


def record_request(
    *,
    user,
    kind,
    model,
    end_state,
    error_code="",
    prompt_tokens=None,
    completion_tokens=None,
    reasoning_tokens=None,
    estimated_prompt_tokens=None,
    estimated_output_tokens=None,
    queue_ms=None,
    first_token_ms=None,
    duration_ms=None,
    api_key=None,
    group=None,
    now=None,
):
    """Store and log one ended model request; returns the UsageRecord.

    `user` may be a user or a user id. Times are in milliseconds, None when
    the request never got that far. `api_key` and `group` (objects or ids)
    attribute a request through the API to its key and billed team. `now`
    sets the record's time (tests).
    """
    record = UsageRecord(
        kind=UsageRecord.Kind(kind),
        model=model,
        end_state=UsageRecord.EndState(end_state),
        error_code=error_code or "",
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        reasoning_tokens=reasoning_tokens,
        counted_tokens=counted_tokens(
            prompt_tokens,
            completion_tokens,
            estimated_prompt_tokens,
            estimated_output_tokens,
        ),
        queue_ms=queue_ms,
        first_token_ms=first_token_ms,
        duration_ms=duration_ms,
    )
    record.user_id = getattr(user, "pk", user)
    record.api_key_id = getattr(api_key, "pk", api_key)
    record.group_id = getattr(group, "pk", group)
    if now is not None:
        record.created = now
    record.save()

    _log(record)
    return record


def backend_name(model):
    """The model's server as name@host:port, without any credentials in the URL.

    The name is the Backend row's (admin); the address is where the requests
    went. A model the app runs itself (the offline formula engine) has none.
    """
    if not ModelProfile.objects.filter(name=model).exists():
        return "-"
    try:
        connection = connection_for_model(model)
    except ImproperlyConfigured:
        # Switched off or never set: the line says so rather than failing.
        return "-"
    parts = urlsplit(connection.base_url or "")
    if not parts.hostname:
        return connection.backend
    address = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    return f"{connection.backend}@{address}"


def _log(record):
    # Operators read these lines; no message text and no key goes in them.
    logger.info(
        "model request user=%s key=%s group=%s kind=%s model=%s backend=%s "
        "end=%s error=%s "
        "prompt_tokens=%s completion_tokens=%s reasoning_tokens=%s "
        "counted_tokens=%s queue_ms=%s first_token_ms=%s duration_ms=%s",
        record.user_id,
        record.api_key_id or "-",
        record.group_id or "-",
        record.kind,
        record.model,
        backend_name(record.model),
        record.end_state,
        record.error_code or "-",
        record.prompt_tokens,
        record.completion_tokens,
        record.reasoning_tokens,
        record.counted_tokens,
        record.queue_ms,
        record.first_token_ms,
        record.duration_ms,
    )
