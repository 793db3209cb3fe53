"""Typed readers for settings that come from the environment.

Each helper fails loudly with ImproperlyConfigured on a value it cannot
parse, so a typo in a deployment's environment stops the process at start-up
instead of surfacing later as odd behaviour. Secrets may also be given as
NAME_FILE, a path whose contents are the value (Docker and systemd secrets).
"""

import os
import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}
BACKEND_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$")


def env_str(name, default=""):
    return os.environ.get(name, default)


def env_bool(name, default=False):
    raw = os.environ.get(name)
    if raw is None:
        return default

    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(
        f"{name} must be a boolean (1/0, true/false), got {raw!r}"
    )


def env_int(name, default, minimum=None):
    return _env_number(name, default, int, "an integer", minimum)


def env_float(name, default, minimum=None):
    return _env_number(name, default, float, "a number", minimum)


def _env_number(name, default, kind, described, minimum):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default

    try:
        value = kind(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {described}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name, default=()):
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name, default=""):
    """Read NAME, or the contents of the file named by NAME_FILE."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE={path!r} cannot be read: {exc}"
            ) from None
    return os.environ.get(name, default)


def env_backends(name):
    """NAME as comma-separated `name=url` pairs, e.g. `ollama=http://ws7:11434/v1`.

    Returns {name: url}. Names are slugs (letters, digits, - and _), because
    each backend's key is read from MODEL_BACKEND_<NAME>_KEY.
    """
    backends = {}
    for item in env_list(name):
        backend, sep, url = item.partition("=")
        backend, url = backend.strip(), url.strip()
        if not sep or not BACKEND_NAME_PATTERN.match(backend):
            raise ImproperlyConfigured(
                f"{name} must be comma-separated name=url pairs with names of "
                f"letters, digits, - and _; got {item!r}"
            )
        if not url.startswith(("http://", "https://")):
            raise ImproperlyConfigured(
                f"{name}: {backend}'s URL must be http(s): {url!r}"
            )
        if backend in backends:
            raise ImproperlyConfigured(f"{name} names {backend!r} twice")
        backends[backend] = url
    return backends


def backend_key_variable(backend):
    """The environment variable holding a backend's key: MODEL_BACKEND_<NAME>_KEY."""
    return "MODEL_BACKEND_" + re.sub(r"[^A-Z0-9]", "_", backend.upper()) + "_KEY"
