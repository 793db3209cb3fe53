"""Throttling of password sign-ins (django-axes) and the client's address.

After AXES_FAILURE_LIMIT wrong passwords for one username from one address,
that pair is refused for the cool-off, even with the right password; other
users, and the same user elsewhere, still sign in. Sign-ins through the
institution's provider carry no password and are never counted: the
provider throttles its own form.
"""

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.shortcuts import render

LOCKED_OUT_STATUS = 429


class SignInThrottleBackend(AxesStandaloneBackend):
    """Axes' lockout check, for sign-ins that come with a request.

    authenticate() without one (the test client's login(), a shell) cannot
    be told apart by address, so it is left to the backends behind.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def is_not_a_password_sign_in(request, credentials):
    """Axes' whitelist: a sign-in without a password is not counted."""
    return "password" not in (credentials or {})


def client_ip(request):
    """The address a request came from, as the last trusted proxy saw it.

    With TRUSTED_PROXY_COUNT proxies in front, each appends the address it
    was reached from to X-Forwarded-For, so the client is that many entries
    from the right; entries further left were written by the client and
    cannot be trusted. Without proxies the socket's address is the client.
    """
    count = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if count and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR")


def locked_out(request, original_response=None, credentials=None):
    """The sign-in page again, saying why it refuses and for how long."""
    username = (credentials or {}).get("username") or request.POST.get("username", "")
    form = AuthenticationForm(request, initial={"username": username})
    context = {
        "form": form,
        "locked_out": True,
        "cooloff_minutes": settings.LOGIN_COOLOFF_MINUTES,
        "next": request.POST.get("next", ""),
        "oidc_enabled": bool(settings.OIDC_ISSUER),
        "local_login_enabled": settings.LOCAL_LOGIN_ENABLED,
    }
    return render(request, "registration/login.html", context, status=LOCKED_OUT_STATUS)
