"""The Content-Security-Policy every page is served with.

Model output reaches the page as sanitised HTML; the policy is the second
wall behind the sanitiser. Scripts load only from the app's own static files:
no inline script and no `eval`, so markup that slipped through could still
not run. Styles allow inline attributes because KaTeX positions glyphs with
them; a style cannot run code. Forms may post to the single sign-on
provider, because signing in and out there is a redirect after a POST,
which browsers check against `form-action`.
"""

from urllib.parse import urlsplit

from django.conf import settings


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


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = build_policy(request.get_host())
        return response
