"""Which server answers for a model, and how to reach it.

A deployment may run several OpenAI-compatible servers: R1 671B on vLLM in
the data centre, a 32B on a workstation's Ollama. Each is a Backend row; each
model's profile names the backend that listed it first. The default backend
is the one MODEL_API_BASE_URL gives, and a profile without a backend uses it.
"""

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from assistant.env import backend_key_variable, env_secret
from assistant.models import Backend, ModelProfile

logger = logging.getLogger(__name__)

DEFAULT_KEY_VARIABLE = "MODEL_API_KEY"


@dataclass(frozen=True)
class Connection:
    """What a client needs to reach one backend."""

    backend: str
    base_url: str
    api_key: str

    @property
    def pool_prefix(self):
        # Admission pools are per server and model: the same model id on two
        # servers shares no slots.
        return self.base_url.rstrip("/")


def default_connection():
    if not settings.MODEL_API_BASE_URL:
        raise ImproperlyConfigured(
            "MODEL_API_BASE_URL is not set: point it at an OpenAI-compatible "
            "API, or start the app with `make run` to use the bundled simulator."
        )
    return Connection(
        Backend.DEFAULT, settings.MODEL_API_BASE_URL, settings.MODEL_API_KEY
    )


def connection_of(backend):
    """The Connection of a Backend row; the key is read from the environment."""
    if backend.name == Backend.DEFAULT and settings.MODEL_API_BASE_URL:
        # The row mirrors the settings the process started with; the
        # settings are what this process was told to use.
        return default_connection()
    if not backend.enabled:
        raise ImproperlyConfigured(f"backend {backend.name} is switched off in admin")

    api_key = env_secret(backend.api_key_variable) if backend.api_key_variable else ""
    return Connection(backend.name, backend.base_url, api_key)


def connection_for_model(model):
    """The Connection of the backend that serves `model` (a model id)."""
    profile = ModelProfile.objects.select_related("backend").filter(name=model).first()
    return connection_for_profile(profile)


def connection_for_profile(profile):
    """The Connection of the backend of a ModelProfile (or of None: the default)."""
    if profile is None or profile.backend is None:
        return default_connection()
    return connection_of(profile.backend)


def backends_in_use():
    """Enabled backends, after writing those the environment names."""
    seed_from_environment()
    return list(Backend.objects.filter(enabled=True))


def seed_from_environment():
    """Create or correct the rows of the backends the environment gives.

    The environment is the truth for their addresses and key variables, so a
    redeploy with a new URL takes effect without a visit to admin; whether
    they are in use and their order stay the administrators' choice.
    """
    wanted = dict(settings.MODEL_BACKENDS)
    key_variables = {name: backend_key_variable(name) for name in wanted}
    if settings.MODEL_API_BASE_URL:
        wanted[Backend.DEFAULT] = settings.MODEL_API_BASE_URL
        key_variables[Backend.DEFAULT] = DEFAULT_KEY_VARIABLE

    for name, base_url in wanted.items():
        _seed(name, base_url, key_variables[name])


def _seed(name, base_url, key_variable):
    backend, created = Backend.objects.get_or_create(
        name=name,
        defaults={
            "base_url": base_url,
            "api_key_variable": key_variable,
            "from_environment": True,
            "sort_order": 0 if name == Backend.DEFAULT else 100,
        },
    )
    if created:
        logger.info("backend %s added from the environment: %s", name, base_url)
        return

    current = (backend.base_url, backend.api_key_variable, backend.from_environment)
    if current != (base_url, key_variable, True):
        logger.info("backend %s now at %s (from the environment)", name, base_url)
        backend.base_url = base_url
        backend.api_key_variable = key_variable
        backend.from_environment = True
        backend.save(update_fields=["base_url", "api_key_variable", "from_environment"])
