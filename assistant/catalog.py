"""Which models users may pick: what the API serves, as configured here."""

import logging

from assistant import failures
from assistant.modelapi import list_models
from assistant.models import ModelProfile

logger = logging.getLogger(__name__)


def offered_models():
    """Enabled profiles of the models the API serves, in display order.

    When the API cannot be asked, the profiles already known are offered, so
    the page still opens and the failure shows on the reply instead.
    """
    try:
        served = list_models()
    except Exception as exc:  # noqa: BLE001 - any failure means "not known now"
        code, detail = failures.classify(exc)
        logger.warning("model list unavailable: %s %s", code, detail)
        return list(ModelProfile.objects.enabled())

    profiles = _profiles_for(served)
    return [profile for profile in profiles if profile.enabled]


def _served_context(model):
    """The context the server says it runs the model with, if it says.

    vLLM lists max_model_len; llama.cpp lists meta.n_ctx, the context of one
    slot (its -c divided by -np), which is what one request gets.
    """
    meta = model.get("meta") or {}
    return model.get("max_model_len") or meta.get("n_ctx")


def _profiles_for(served):
    names = [model["id"] for model in served]
    known = {p.name: p for p in ModelProfile.objects.filter(name__in=names)}
    for model in served:
        if model["id"] not in known:
            known[model["id"]] = ModelProfile.ensure(
                model["id"], _served_context(model)
            )
    return sorted(known.values(), key=lambda p: (p.sort_order, p.name))
