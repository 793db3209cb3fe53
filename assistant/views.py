"""Signing in and out: the local password form and the institution's provider."""

import logging

import requests
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpResponseNotAllowed
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _
from django.views.generic import View
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from assistant.oidc import AccessRefused, ProviderUnavailable, provider_configuration

logger = logging.getLogger(__name__)

# Why a sign-in through the provider failed, as the user is told: status,
# heading, explanation.
FAILURES = {
    "unavailable": (
        503,
        _("The sign-in service cannot be reached"),
        _(
            "The institution's sign-in service did not answer. Try again in a "
            "few minutes; if it keeps failing, tell the administrators."
        ),
    ),
    "expired": (
        400,
        _("This sign-in has expired"),
        _(
            "It was started too long ago or in another tab or browser. "
            "Start it again from here."
        ),
    ),
    "denied": (
        403,
        _("Sign-in cancelled"),
        _(
            "The sign-in was cancelled at the institution's sign-in page, so "
            "nothing was shared with the research assistant."
        ),
    ),
    "refused": (
        403,
        _("This account has no access"),
        _(
            "Your institutional account is not among those allowed to use the "
            "research assistant. Ask the administrators if you need access."
        ),
    ),
    "failed": (
        400,
        _("Sign-in did not succeed"),
        _("Signing in with your institutional account did not work. Try again."),
    ),
}


class SignInView(auth_views.LoginView):
    """The sign-in page: the provider's button, the password form, or both."""

    def post(self, request, *args, **kwargs):
        if not settings.LOCAL_LOGIN_ENABLED:
            return HttpResponseNotAllowed(["GET"])
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["oidc_enabled"] = bool(settings.OIDC_ISSUER)
        context["local_login_enabled"] = settings.LOCAL_LOGIN_ENABLED
        return context


class OIDCStartView(OIDCAuthenticationRequestView):
    """Send the browser to the provider, with state, nonce and PKCE challenge."""

    def __init__(self, **kwargs):
        # The library reads the endpoint from settings here; it comes from
        # discovery in get() instead.
        View.__init__(self, **kwargs)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID

    def get(self, request):
        if not settings.OIDC_ISSUER:
            raise Http404

        try:
            configuration = provider_configuration()
        except ProviderUnavailable:
            return sign_in_failure(request, "unavailable")

        self.OIDC_OP_AUTH_ENDPOINT = configuration["authorization_endpoint"]
        return super().get(request)


class OIDCCallbackView(OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back, with a code or an error."""

    def get(self, request):
        if not settings.OIDC_ISSUER:
            raise Http404

        error = request.GET.get("error")
        if error:
            return self._provider_error(request, error)

        state = request.GET.get("state")
        if state and state not in request.session.get("oidc_states", {}):
            logger.warning("OIDC callback with an unknown state: old tab or browser")
            return sign_in_failure(request, "expired")

        try:
            return super().get(request)
        except AccessRefused as exc:
            logger.warning("OIDC sign-in refused by the claims of %s", exc)
            request.session.pop("oidc_id_token", None)
            return sign_in_failure(request, "refused")
        except ProviderUnavailable:
            return sign_in_failure(request, "unavailable")
        except requests.HTTPError as exc:
            return self._request_failed(request, exc, exc.response.status_code)
        except requests.RequestException as exc:
            return self._request_failed(request, exc, None)
        except SuspiciousOperation as exc:
            logger.warning("OIDC sign-in rejected: %s", exc)
            return sign_in_failure(request, "failed")

    def login_failure(self):
        return sign_in_failure(self.request, "failed")

    def _provider_error(self, request, error):
        # The state is spent either way; drop it as the library would.
        states = request.session.get("oidc_states", {})
        if states.pop(request.GET.get("state"), None) is not None:
            request.session.modified = True

        logger.warning(
            "OIDC provider returned error %s: %.200s",
            error,
            request.GET.get("error_description", ""),
        )
        return sign_in_failure(
            request, "denied" if error == "access_denied" else "failed"
        )

    def _request_failed(self, request, exc, status):
        # The library's messages carry URLs and error bodies, never the code
        # or secret, so they are safe to log.
        logger.warning("OIDC request to the provider failed: %s", exc)
        if status is not None and status < 500:
            return sign_in_failure(request, "failed")
        return sign_in_failure(request, "unavailable")


def sign_in_failure(request, reason):
    status, title, message = FAILURES[reason]
    context = {
        "title": title,
        "message": message,
        "can_retry": reason != "refused",
    }
    return render(request, "registration/oidc_error.html", context, status=status)
