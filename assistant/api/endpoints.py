"""The OpenAI-compatible endpoints under /v1, served by Daphne as async views.

Each request is checked in the order a client can act on: the key, the
body, the model and the key's scope, the key's rate, the size against the
model's context, then the quotas, the last of them the user's requests at
once; only then does it take a place in the model's admission queue
(assistant.api.relay).
"""

import functools
import json
import logging

from asgiref.sync import sync_to_async
from django.http import JsonResponse, StreamingHttpResponse
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from assistant import catalog, metering, quotas
from assistant.api import errors, limits
from assistant.api.models import ApiKey
from assistant.api.relay import (
    REASONING_FIELDS,
    EmbeddingRelay,
    Relay,
    estimate_prompt,
)
from assistant.backends import connection_for_model
from assistant.models import ModelProfile, OpenRequest
from chat.prompt import SAFETY_MARGIN, count_text_tokens

logger = logging.getLogger(__name__)


def api_view(method):
    """Answer ApiErrors in OpenAI's shape, and other methods with a 405."""

    def decorate(view):
        @functools.wraps(view)
        async def wrapper(request, *args, **kwargs):
            try:
                if request.method != method:
                    raise errors.ApiError(
                        405,
                        "method_not_allowed",
                        _("Use %(method)s for this endpoint.") % {"method": method},
                    )
                return await view(request, *args, **kwargs)
            except errors.ApiError as exc:
                logger.info("api request refused: %s %s", exc.status, exc.code)
                return exc.response()
            except Exception:
                # Clients read only OpenAI's error shape, never a 500 page.
                logger.exception("api request to %s failed", request.path)
                return errors.internal().response()

        return csrf_exempt(wrapper)

    return decorate


async def authenticate(request):
    header = request.headers.get("Authorization", "")
    scheme, _sep, raw_key = header.partition(" ")
    if scheme.lower() != "bearer" or not raw_key.strip():
        raise errors.missing_key()

    key = await sync_to_async(ApiKey.find)(raw_key.strip())
    if key is None:
        raise errors.invalid_key()
    return key


def read_body(request):
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        raise errors.bad_json() from None
    if not isinstance(body, dict):
        raise errors.bad_json()
    return body


async def find_profile(key, name):
    if not isinstance(name, str) or not name:
        raise errors.missing_field("model")

    offered = await sync_to_async(catalog.offered_models)()
    profile = next((p for p in offered if p.name == name), None)
    if profile is None:
        # Embedding models may be set up by hand without being chat models.
        profile = await ModelProfile.objects.enabled().filter(name=name).afirst()
    if profile is None:
        raise errors.unknown_model(name)
    if not key.allows_model(name):
        raise errors.model_not_in_scope(name)
    return profile


def take_turn(key):
    retry_after = limits.take_request(key)
    if retry_after is not None:
        raise errors.rate_limited(key.requests_per_minute, retry_after)


def check_quotas(key, needed_tokens):
    # Requests at once are counted by hold_place, once the request is one.
    refusal = quotas.check_quota(key.user_id, needed_tokens, count_open=lambda: 0)
    refusal = refusal or limits.check_key_quota(key, needed_tokens)
    if refusal is not None:
        raise errors.over_quota(refusal)


def hold_place(key):
    """Count the request among the user's requests at once; its OpenRequest.

    The key's user's open chat replies, polish chunks, conversions and
    earlier API requests go first. An API client over the quota is refused
    with a 429 rather than held, so that it can back off as it would for
    any rate limit. The relay deletes the row however the request ends.
    """
    in_flight = OpenRequest.objects.create(user_id=key.user_id, kind="api")
    user_limits = quotas.limits_for(key.user_id)
    limit = user_limits.concurrent_requests if user_limits else None
    if limit is None:
        return in_flight

    ahead = quotas.requests_ahead(in_flight)
    if ahead >= limit:
        in_flight.delete()
        refusal = quotas.Refusal("quota_concurrent", {"limit": limit, "open": ahead})
        raise errors.over_quota(refusal)
    return in_flight


@api_view("GET")
async def list_models(request):
    key = await authenticate(request)
    offered = await sync_to_async(catalog.offered_models)()
    data = [
        {
            "id": profile.name,
            "object": "model",
            "created": int(profile.created.timestamp()),
            "owned_by": "research-assistant",
        }
        for profile in offered
        if key.allows_model(profile.name)
    ]
    return JsonResponse({"object": "list", "data": data})


@api_view("POST")
async def chat_completions(request):
    key = await authenticate(request)
    body = read_body(request)
    messages = _messages(body)
    stream = _flag(body, "stream")
    if body.get("reasoning_field", REASONING_FIELDS[0]) not in REASONING_FIELDS:
        raise errors.bad_field("reasoning_field")

    profile = await find_profile(key, body.get("model"))
    connection = await sync_to_async(connection_for_model)(profile.name)
    prompt_estimate = estimate_prompt(messages)
    async with _MeteredRefusal(key, profile):
        await sync_to_async(take_turn)(key)
        max_tokens = _output_limit(body, profile, prompt_estimate)
        await sync_to_async(check_quotas)(key, prompt_estimate)
        in_flight = await sync_to_async(hold_place)(key)

    relay = Relay(
        key, profile, connection, body, prompt_estimate, max_tokens, in_flight
    )
    if not stream:
        return JsonResponse(await relay.complete())

    response = StreamingHttpResponse(relay.events(), content_type="text/event-stream")
    # Proxies such as nginx would otherwise hold the chunks back.
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@api_view("POST")
async def embeddings(request):
    key = await authenticate(request)
    body = read_body(request)
    prompt_estimate = _estimate_inputs(body)

    profile = await find_profile(key, body.get("model"))
    connection = await sync_to_async(connection_for_model)(profile.name)
    async with _MeteredRefusal(key, profile):
        await sync_to_async(take_turn)(key)
        if prompt_estimate > profile.input_limit:
            raise errors.too_long(prompt_estimate, profile)
        await sync_to_async(check_quotas)(key, prompt_estimate)
        in_flight = await sync_to_async(hold_place)(key)

    relay = EmbeddingRelay(key, profile, connection, body, prompt_estimate, in_flight)
    return JsonResponse(await relay.complete())


class _MeteredRefusal:
    """Leaves a usage record, at no cost, for a request refused by a limit."""

    def __init__(self, key, profile):
        self.key = key
        self.profile = profile

    async def __aenter__(self):
        return self

    async def __aexit__(self, exc_type, exc, traceback):
        if isinstance(exc, errors.ApiError):
            await sync_to_async(metering.record_request)(
                user=self.key.user_id,
                kind="api",
                model=self.profile.name,
                end_state="error",
                error_code=exc.code[:32],
                api_key=self.key.pk,
                group=self.key.group_id,
            )
        return False


@csrf_exempt
async def unknown_endpoint(request, path):
    return errors.ApiError(404, "unknown_url", f"No endpoint at /v1/{path}.").response()


def _messages(body):
    messages = body.get("messages")
    if messages is None:
        raise errors.missing_field("messages")
    valid = (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages
        )
    )
    if not valid:
        raise errors.bad_field("messages")
    return messages


def _flag(body, name):
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise errors.bad_field(name)
    return value


def _estimate_inputs(body):
    """Tokens of the texts to embed; token ids (lists of ints) count one each."""
    value = body.get("input")
    if value is None:
        raise errors.missing_field("input")
    inputs = [value] if isinstance(value, str) else value
    if not isinstance(inputs, list) or not inputs:
        raise errors.bad_field("input")
    if isinstance(inputs[0], int):
        inputs = [inputs]
    if not all(isinstance(item, str | list) for item in inputs):
        raise errors.bad_field("input")
    return sum(
        count_text_tokens(item) if isinstance(item, str) else len(item)
        for item in inputs
    )


def _output_limit(body, profile, prompt_estimate):
    """max_tokens for the backend: what was asked, within what the model allows.

    A prompt over the model's input limit is refused here rather than sent
    to fail at the backend after a wait in the queue.
    """
    if prompt_estimate > profile.input_limit:
        raise errors.too_long(prompt_estimate, profile)

    room = profile.context_window - prompt_estimate - SAFETY_MARGIN
    asked = body.get("max_completion_tokens") or body.get("max_tokens")
    if asked is not None and (not isinstance(asked, int) or asked < 1):
        raise errors.bad_field("max_tokens")
    return max(
        1, min(asked or profile.max_output_tokens, profile.max_output_tokens, room)
    )
