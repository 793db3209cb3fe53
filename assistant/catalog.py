"""Which models users may pick: what the API serves, as configured here."""

import logging

from django.db.models import Q

from assistant import failures
from assistant.modelapi import served_models
from assistant.models import Backend, ModelProfile

logger = logging.getLogger(__name__)


def offered_models():
    """Enabled profiles of the models the API serves, in display order.

    When the API cannot be asked, the profiles already known are offered, so
    the page still opens and the failure shows on the reply instead.
    """
    try:
        served = served_models()
    except Exception as exc:  # noqa: BLE001 - any failure means "not known now"
        code, detail = failures.classify(exc)
        logger.warning("model list unavailable: %s %s", code, detail)
        return list(ModelProfile.objects.enabled())

    profiles = _profiles_for(served.models)
    # A backend that did not answer keeps its models on offer: the failure
    # then shows on the reply, with its reason, instead of a vanished model.
    profiles += _known_profiles_of(served.unreachable, exclude=profiles)
    profiles.sort(key=lambda p: (p.sort_order, p.name))
    return [profile for profile in profiles if profile.enabled]


def _served_context(model):
    """The context the server says it runs the model with, if it says.

    vLLM lists max_model_len; llama.cpp lists meta.n_ctx, the context of one
    slot (its -c divided by -np), which is what one request gets.
    """
    meta = model.get("meta") or {}
    return model.get("max_model_len") or meta.get("n_ctx")


def _profiles_for(served):
    """The profiles of the listed models, made for those seen the first time.

    A model id listed by two backends belongs to the one that listed it
    first (the profile's backend); the other backend's copy is not offered.
    """
    names = [model["id"] for model in served]
    known = {
        p.name: p
        for p in ModelProfile.objects.filter(name__in=names).select_related("backend")
    }
    new_models = [model for model in served if model["id"] not in known]
    if new_models:
        # Only a model seen for the first time costs a query more.
        backends = {backend.name: backend for backend in Backend.objects.all()}
    for model in new_models:
        if model["id"] not in known:
            profile = ModelProfile.ensure(model["id"], _served_context(model))
            _assign_backend(profile, backends.get(model.get("backend")))
            known[model["id"]] = profile
    return list(known.values())


def _assign_backend(profile, backend):
    if profile.backend_id is not None or backend is None:
        return
    if backend.name == Backend.DEFAULT:
        # No backend on the profile already means the default one.
        return
    profile.backend = backend
    profile.save(update_fields=["backend"])


def _known_profiles_of(backend_names, exclude):
    if not backend_names:
        return []
    listed = {profile.pk for profile in exclude}
    profiles = ModelProfile.objects.enabled().filter(backend__name__in=backend_names)
    if Backend.DEFAULT in backend_names:
        profiles = ModelProfile.objects.enabled().filter(
            Q(backend__name__in=backend_names) | Q(backend__isnull=True)
        )
    return [profile for profile in profiles if profile.pk not in listed]
