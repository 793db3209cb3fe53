"""The Content-Security-Policy every page is served with.

Model output reaches the page as sanitised HTML; the policy is the second
wall behind the sanitiser. Scripts load only from the app's own static files:
no inline script and no `eval`, so markup that slipped through could still
not run. Styles allow inline attributes because KaTeX positions glyphs with
them; a style cannot run code. Forms may post to the single sign-on
provider, because signing in and out there is a redirect after a POST,
which browsers check against `form-action`.
"""

import logging
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from assistant.api import errors

logger = logging.getLogger(__name__)


def build_policy(host):
    form_targets = ["'self'"]
    if settings.OIDC_ISSUER:
        issuer = urlsplit(settings.OIDC_ISSUER)
        form_targets.append(f"{issuer.scheme}://{issuer.netloc}")

    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        # 'self' covers same-origin websockets in current browsers; the
        # explicit forms keep older ones working.
        "connect-src": ["'self'", f"ws://{host}", f"wss://{host}"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": form_targets,
    }
    return "; ".join(
        f"{name} {' '.join(values)}" for name, values in directives.items()
    )


class _SyncAndAsyncMiddleware:
    """A middleware Django runs in whichever mode the chain beneath it has.

    Under ASGI a sync-only middleware makes Django run the request in a
    thread, and an async view then holds that thread for as long as it
    waits (a /v1 completion for its whole place in the model's queue).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(self.get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return self.handle(request)

    async def __acall__(self, request):
        raise NotImplementedError

    def handle(self, request):
        raise NotImplementedError


class ContentSecurityPolicyMiddleware(_SyncAndAsyncMiddleware):
    def handle(self, request):
        return self._with_policy(request, self.get_response(request))

    async def __acall__(self, request):
        return self._with_policy(request, await self.get_response(request))

    def _with_policy(self, request, response):
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = build_policy(request.get_host())
        return response


class RequestSizeLimitMiddleware(_SyncAndAsyncMiddleware):
    """Refuse a request whose declared body is over MAX_REQUEST_BYTES.

    Every upload has a smaller limit of its own, checked where it is read;
    this is the ceiling above them all, so that no form parses a body far
    beyond any of them. The server has received the body by the time this
    runs (Django's ASGI handler reads it first), so the proxy in front
    should refuse such bodies too (nginx: client_max_body_size).
    """

    def handle(self, request):
        if _is_too_large(request):
            return _too_large(request)
        return self.get_response(request)

    async def __acall__(self, request):
        if _is_too_large(request):
            # The page renders with the session's user, which the database
            # holds; only the rare refusal pays for the thread.
            return await sync_to_async(_too_large)(request)
        return await self.get_response(request)


def _is_too_large(request):
    declared = _declared_length(request)
    if declared <= settings.MAX_REQUEST_BYTES:
        return False

    logger.warning(
        "Refused a %s byte request to %s (limit %s)",
        declared,
        request.path,
        settings.MAX_REQUEST_BYTES,
    )
    return True


def _declared_length(request):
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _too_large(request):
    limit = settings.MAX_REQUEST_BYTES // (1024 * 1024)
    if request.path.startswith("/v1/"):
        # API clients read only OpenAI's error shape.
        return errors.request_too_large(limit).response()

    message = _(
        "The upload is larger than %(limit)s MB, more than any file here may be."
    ) % {"limit": limit}
    # The page's scripts send their uploads with the CSRF header and show
    # an "error" field; a plain form gets a page.
    if "HTTP_X_CSRFTOKEN" in request.META:
        return JsonResponse({"error": message}, status=413)
    context = {"title": _("The upload is too large"), "message": message}
    return render(request, "request_too_large.html", context, status=413)
