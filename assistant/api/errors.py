"""Errors in the shape OpenAI's clients read: {"error": {message, type, code}}.

Clients such as Dify and Open WebUI show `message` to the person who ran
them, so it is translated like the rest of the app (Accept-Language picks
the language); `code` is stable English for programs.
"""

import json

from django.http import JsonResponse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

# The `type` OpenAI gives each HTTP status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class ApiError(Exception):
    """A request the API answers with an error instead of a completion."""

    def __init__(self, status, code, message, param=None, retry_after=None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = str(message)
        self.param = param
        self.retry_after = retry_after

    @property
    def type(self):
        if self.code.startswith(("quota_daily", "quota_monthly", "key_quota")):
            return "insufficient_quota"
        return ERROR_TYPES.get(self.status, "server_error")

    def payload(self):
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self):
        response = JsonResponse(self.payload(), status=self.status)
        if self.retry_after is not None:
            response["Retry-After"] = str(self.retry_after)
        return response

    def sse(self):
        """The error as the last event of a stream that had already begun."""
        return f"data: {json.dumps(self.payload(), ensure_ascii=False)}\n\n"


def missing_key():
    return ApiError(
        401,
        "invalid_api_key",
        _("No API key: send it as 'Authorization: Bearer <key>'."),
    )


def invalid_key():
    return ApiError(
        401,
        "invalid_api_key",
        _("The API key is not valid, or it was rotated or revoked."),
    )


def bad_json():
    return ApiError(400, "invalid_json", _("The request body is not a JSON object."))


def missing_field(name):
    return ApiError(
        400,
        "missing_field",
        _("The request needs the field '%(field)s'.") % {"field": name},
        param=name,
    )


def bad_field(name):
    return ApiError(
        400,
        "invalid_field",
        _("The field '%(field)s' has a value the API cannot use.") % {"field": name},
        param=name,
    )


def unknown_model(model):
    return ApiError(
        404,
        "model_not_found",
        _("The model '%(model)s' does not exist or is not offered.") % {"model": model},
        param="model",
    )


def model_not_in_scope(model):
    return ApiError(
        403,
        "model_not_allowed",
        _("This API key may not use the model '%(model)s'.") % {"model": model},
        param="model",
    )


def rate_limited(limit, retry_after):
    return ApiError(
        429,
        "rate_limit_exceeded",
        _two_sentences(
            ngettext(
                "This API key may send %(limit)s request a minute.",
                "This API key may send %(limit)s requests a minute.",
                limit,
            )
            % {"limit": limit},
            ngettext(
                "Try again in %(seconds)s second.",
                "Try again in %(seconds)s seconds.",
                retry_after,
            )
            % {"seconds": retry_after},
        ),
        retry_after=retry_after,
    )


def _two_sentences(first, second):
    # Each sentence has a count of its own, so each is translated with the
    # plural form its count needs; languages differ in how they join them.
    # Translators: two sentences of one message, joined as the language
    # joins sentences.
    return _("%(first)s %(second)s") % {"first": first, "second": second}


def over_quota(refusal):
    params = refusal.params
    if refusal.code == "quota_concurrent":
        return ApiError(
            429,
            refusal.code,
            _(
                "%(open)s requests of this account are queued or running, as "
                "many as its quota allows at once (%(limit)s); send this one "
                "again when one of them has finished."
            )
            % params,
        )
    return ApiError(
        429,
        refusal.code,
        _(
            "The token quota has %(left)s of %(limit)s tokens left and this "
            "request needs about %(needed)s; it resets at %(resets)s (%(zone)s)."
        )
        % params,
        retry_after=refusal.seconds_to_reset(),
    )


def request_too_large(limit_mb):
    return ApiError(
        413,
        "request_too_large",
        _(
            "The request body is larger than %(limit)s MB, the most this API "
            "accepts; nothing was sent."
        )
        % {"limit": limit_mb},
    )


def too_long(estimate, profile):
    return ApiError(
        400,
        "context_length_exceeded",
        _(
            "The messages come to about %(estimate)s tokens, and %(model)s "
            "accepts %(limit)s; nothing was sent."
        )
        % {"estimate": estimate, "model": profile.name, "limit": profile.input_limit},
        param="messages",
    )


def queue_timeout():
    return ApiError(
        503,
        "queue_timeout",
        _("The model stayed busy for too long; the request was not sent."),
    )


def upstream(status, code, message):
    return ApiError(
        status if status >= 400 else 502,
        code,
        _("The model service answered: %(message)s") % {"message": message},
    )


def internal():
    return ApiError(
        500,
        "internal",
        _("Something went wrong in the app. The error has been logged."),
    )
