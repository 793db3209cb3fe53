"""Single sign-on through the institution's OpenID Connect provider.

mozilla-django-oidc runs the authorization-code flow (with PKCE); this module
adds what it leaves to the project: endpoints discovered from the issuer,
ID tokens checked for issuer and audience as well as signature, users keyed
on issuer and subject rather than e-mail, groups from claims, an allow-list,
and logout at the provider. See docs/oidc.md for the operator's side.
"""

import hashlib
import logging
import re
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.shortcuts import resolve_url
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from assistant.models import ExternalIdentity

logger = logging.getLogger(__name__)

# Providers rarely move their endpoints; an hour bounds how long a move goes
# unnoticed without a network call on every sign-in.
DISCOVERY_CACHE_SECONDS = 3600
REQUIRED_METADATA = ["issuer", "authorization_endpoint", "token_endpoint", "jwks_uri"]
GROUP_NAME_MAX_LENGTH = Group._meta.get_field("name").max_length


class ProviderUnavailable(Exception):
    """The provider did not answer, or answered with something unusable."""


class AccessRefused(Exception):
    """The provider vouched for the user, but the configured claims keep them out."""


def provider_configuration():
    """The provider's discovery document, fetched once and then cached."""
    issuer = settings.OIDC_ISSUER
    cache_key = discovery_cache_key(issuer)
    document = cache.get(cache_key)
    if document is not None:
        return document

    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        logger.warning("OIDC discovery at %s failed: %s", url, exc)
        raise ProviderUnavailable(url) from exc

    missing = [key for key in REQUIRED_METADATA if not document.get(key)]
    if missing or document["issuer"] != issuer:
        # A wrong OIDC_ISSUER (a trailing path, http for https) lands here.
        logger.warning(
            "OIDC discovery at %s is unusable: issuer %r, missing %s",
            url,
            document.get("issuer"),
            missing,
        )
        raise ProviderUnavailable(url)

    cache.set(cache_key, document, DISCOVERY_CACHE_SECONDS)
    return document


def discovery_cache_key(issuer):
    return f"oidc-discovery:{hashlib.sha256(issuer.encode()).hexdigest()}"


def claim_values(sources, path):
    """The string values of the claim at `path` in any of the claim sets.

    A path is a claim name, or dotted names into nested objects
    ("realm_access.roles"). A claim may hold a string or a list of strings.
    """
    values = []
    for claims in sources:
        found = _lookup(claims, path)
        items = found if isinstance(found, list) else [found]
        for item in items:
            if isinstance(item, bool):
                item = "true" if item else "false"
            if isinstance(item, str | int) and str(item) not in values:
                values.append(str(item))
    return values


def _lookup(claims, path):
    # Claim names may contain dots themselves (URL-named claims).
    if path in claims:
        return claims[path]

    found = claims
    for name in path.split("."):
        if not isinstance(found, dict) or name not in found:
            return None
        found = found[name]
    return found


def is_allowed(sources):
    """Whether the allow-list, if one is configured, lets these claims in."""
    if not settings.OIDC_REQUIRED_CLAIM:
        return True

    values = claim_values(sources, settings.OIDC_REQUIRED_CLAIM)
    if not settings.OIDC_REQUIRED_VALUES:
        return any(value not in ("", "false") for value in values)
    return bool(set(values) & set(settings.OIDC_REQUIRED_VALUES))


def group_names(sources):
    """The Django groups the claims put the user in, with the prefix."""
    names = []
    for path in settings.OIDC_GROUP_CLAIMS:
        for value in claim_values(sources, path):
            name = f"{settings.OIDC_GROUP_PREFIX}{value}"
            if len(name) > GROUP_NAME_MAX_LENGTH:
                logger.warning("Claim value too long for a group name: %.40s…", name)
            elif name not in names:
                names.append(name)
    return names


class InstitutionBackend(OIDCAuthenticationBackend):
    """Signs in users vouched for by the provider at OIDC_ISSUER."""

    def __init__(self, *args, **kwargs):
        # Django builds a backend for every request that loads a user, so the
        # endpoints are looked up only when a sign-in needs them.
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.UserModel = get_user_model()

    def authenticate(self, request, **kwargs):
        # Only the callback view passes a nonce; a password sign-in that
        # happens to carry ?code= must not start a token exchange.
        if "nonce" not in kwargs or not settings.OIDC_ISSUER:
            return None

        configuration = provider_configuration()
        self.issuer = configuration["issuer"]
        self.OIDC_OP_TOKEN_ENDPOINT = configuration["token_endpoint"]
        self.OIDC_OP_JWKS_ENDPOINT = configuration["jwks_uri"]
        self.OIDC_OP_USER_ENDPOINT = configuration.get("userinfo_endpoint")
        return super().authenticate(request, **kwargs)

    # Unlike the library's, refuse users an administrator has deactivated.
    get_user = ModelBackend.get_user

    def get_payload_data(self, token, key):
        """Check signature, issuer and audience: from the provider, for this app."""
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=self.issuer,
                leeway=60,
            )
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"token rejected: {exc}") from exc

    def get_or_create_user(self, access_token, id_token, payload):
        userinfo = {}
        if self.OIDC_OP_USER_ENDPOINT:
            userinfo = self.get_userinfo(access_token, id_token, payload)
            if userinfo.get("sub", payload["sub"]) != payload["sub"]:
                raise SuspiciousOperation("userinfo is about another subject")

        sources = [payload, userinfo, self._access_token_claims(access_token)]
        if not is_allowed(sources):
            raise AccessRefused(f"{self.issuer} {payload['sub']}")

        with transaction.atomic():
            identity = self._identity_for(payload["sub"], {**payload, **userinfo})
            user = identity.user
            if not user.is_active:
                raise AccessRefused(f"{self.issuer} {payload['sub']} (deactivated)")
            _refresh_profile(user, {**payload, **userinfo})
            _sync_claim_groups(identity, group_names(sources))
        return user

    def _identity_for(self, subject, claims):
        identity = (
            ExternalIdentity.objects.select_related("user")
            .filter(issuer=self.issuer, subject=subject)
            .first()
        )
        if identity is not None:
            return identity

        username = self._free_username(claims, subject)
        user = self.UserModel.objects.create_user(username)
        return ExternalIdentity.objects.create(
            user=user, issuer=self.issuer, subject=subject
        )

    def _free_username(self, claims, subject):
        wanted = claims.get("preferred_username") or claims.get("email") or "user"
        base = re.sub(r"[^\w.@+-]", "", str(wanted))[:120] or "user"
        if not self.UserModel.objects.filter(username=base).exists():
            return base

        # Someone has the name already: a local account, or another
        # provider's user. A suffix from the subject keeps it stable.
        digest = hashlib.sha256(f"{self.issuer} {subject}".encode()).hexdigest()
        return f"{base}-{digest[:8]}"

    def _access_token_claims(self, access_token):
        """Claims of an access token that is a JWT signed by the provider."""
        if not access_token or access_token.count(".") != 2:
            return {}

        try:
            key = self.retrieve_matching_jwk(access_token)
            return jwt.decode(
                access_token,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                issuer=self.issuer,
                options={"verify_aud": False},
                leeway=60,
            )
        except (jwt.InvalidTokenError, SuspiciousOperation) as exc:
            logger.warning("Access token claims ignored, not verifiable: %s", exc)
            return {}


def _refresh_profile(user, claims):
    """Name and e-mail as the provider has them now; absent claims change nothing."""
    fields = {}
    if "email" in claims:
        fields["email"] = claims["email"] or ""
    if "given_name" in claims or "family_name" in claims:
        fields["first_name"] = claims.get("given_name") or ""
        fields["last_name"] = claims.get("family_name") or ""
    elif "name" in claims:
        fields["first_name"] = claims["name"] or ""
        fields["last_name"] = ""

    changed = []
    for field, value in fields.items():
        limit = user._meta.get_field(field).max_length
        if getattr(user, field) != value[:limit]:
            setattr(user, field, value[:limit])
            changed.append(field)
    if changed:
        user.save(update_fields=changed)


def _sync_claim_groups(identity, names):
    """Replace the groups the last sign-in's claims gave; keep the others."""
    groups = [Group.objects.get_or_create(name=name)[0] for name in names]
    stale = set(identity.claim_groups.all()) - set(groups)

    identity.user.groups.remove(*stale)
    identity.user.groups.add(*groups)
    identity.claim_groups.set(groups)


def provider_logout_url(request):
    """Where signing out leads: the provider's logout when it has one.

    Called by the logout view before the session ends, while the ID token
    saved at sign-in is still in it.
    """
    local_url = resolve_url(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get("oidc_id_token")
    if not settings.OIDC_ISSUER or not id_token:
        return local_url

    try:
        endpoint = provider_configuration().get("end_session_endpoint")
    except ProviderUnavailable:
        return local_url
    if not endpoint:
        return local_url

    query = urlencode(
        {
            "id_token_hint": id_token,
            "post_logout_redirect_uri": request.build_absolute_uri(local_url),
            "client_id": settings.OIDC_RP_CLIENT_ID,
        }
    )
    separator = "&" if "?" in endpoint else "?"
    return f"{endpoint}{separator}{query}"
