"""The image converter's page and its JSON endpoints."""

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from academic import imaging, img2tex, ocr_engine
from academic.convert_forms import ConversionForm, ConversionOptionsForm
from academic.models import Conversion
from academic.table_preview import preview_html
from academic.tasks import convert_image
from assistant.catalog import offered_models

HISTORY_LENGTH = 50
# The form's other fields and the multipart boundaries around the image.
FORM_OVERHEAD_BYTES = 64 * 1024

ADJUSTMENT_LABELS = {
    "orientation": gettext_lazy("turned upright"),
    "transparency": gettext_lazy("transparency put on a plain background"),
    "colour_mode": gettext_lazy("colours converted to RGB"),
    "inverted": gettext_lazy("dark background inverted"),
    "scaled_down": gettext_lazy("scaled down"),
    "scaled_up": gettext_lazy("scaled up"),
}


DOUBT_LABELS = {
    ocr_engine.TIMEOUT: gettext_lazy(
        "The offline engine ran out of time, so the source may be cut short."
    ),
    ocr_engine.LENGTH: gettext_lazy(
        "The offline engine reached its length limit, so the source may be cut short."
    ),
    ocr_engine.REPETITION: gettext_lazy(
        "The offline engine began repeating itself, so the source is probably wrong."
    ),
    ocr_engine.STRUCTURED: gettext_lazy(
        "The offline engine reads few structured formulas (aligned lines, "
        "matrices, cases) right."
    ),
    ocr_engine.UNSURE: gettext_lazy(
        "The offline engine was unsure of some characters."
    ),
}


def _vision_models():
    return [profile for profile in offered_models() if profile.supports_vision]


def _no_engine_message(vision_models):
    """Why nothing can be converted; empty when something can."""
    if vision_models or ocr_engine.enabled():
        return ""
    return str(img2tex.describe("no_vision_model"))


def _get_conversion_for_user(request, pk):
    conversions = Conversion.objects.defer("image")
    return get_object_or_404(conversions, pk=pk, owner=request.user)


@login_required
@require_GET
def convert(request):
    history = request.user.conversions.for_history()[:HISTORY_LENGTH]
    vision_models = _vision_models()
    context = {
        "vision_models": vision_models,
        "kinds": Conversion.Kind.choices,
        "targets": Conversion.Target.choices,
        "wrappers": Conversion.Wrapper.choices,
        "page_data": {
            "createUrl": reverse("academic-convert-create"),
            "chatUrl": reverse("chat-home"),
            "polishUrl": reverse("academic-home"),
            "history": [conversion_data(c) for c in history],
            "noVisionModel": _no_engine_message(vision_models),
            "strings": _ui_strings(),
        },
    }
    return render(request, "academic/convert.html", context)


@login_required
@require_POST
def create(request):
    vision_models = _vision_models()
    if _no_engine_message(vision_models):
        return _refusal(_no_engine_message(vision_models), status=503)

    if _declared_length(request) > imaging.MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES:
        # Refused before Django spools the whole body to a temporary file.
        return _refusal(str(imaging.MESSAGES["too_large_file"]), status=413)

    form = ConversionForm(request.POST, request.FILES, vision_models=vision_models)
    if not form.is_valid():
        return _refusal(" ".join(_first_errors(form)))

    conversion = form.save(owner=request.user)
    return _started(conversion)


@login_required
@require_POST
def again(request, pk):
    """Convert a stored picture once more, with the options now chosen."""
    earlier = get_object_or_404(Conversion, pk=pk, owner=request.user)
    vision_models = _vision_models()
    if _no_engine_message(vision_models):
        return _refusal(_no_engine_message(vision_models), status=503)

    form = ConversionOptionsForm(request.POST, vision_models=vision_models)
    if not form.is_valid():
        return _refusal(" ".join(_first_errors(form)))

    conversion = form.save_again(earlier)
    return _started(conversion)


def _started(conversion):
    transaction.on_commit(lambda: convert_image.delay(conversion.pk))
    return JsonResponse(conversion_data(conversion), status=201)


@login_required
@require_GET
def status(request, pk):
    return JsonResponse(conversion_data(_get_conversion_for_user(request, pk)))


@login_required
@require_GET
def image(request, pk):
    conversion = get_object_or_404(Conversion, pk=pk, owner=request.user)
    response = HttpResponse(bytes(conversion.image), content_type="image/png")
    response["Cache-Control"] = "private, max-age=86400"
    return response


def _declared_length(request):
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _refusal(message, status=400):
    return JsonResponse({"error": message}, status=status)


def _first_errors(form):
    return [str(errors[0]) for errors in form.errors.values()]


def conversion_data(conversion):
    """A conversion as the page's script draws it."""
    data = {
        "id": conversion.pk,
        "status": conversion.status,
        "isOpen": conversion.is_open,
        "kind": conversion.kind,
        "target": conversion.target,
        "wrapper": conversion.wrapper,
        "label": f"{conversion.get_kind_display()} → {conversion.get_target_display()}",
        "model": conversion.model,
        "engine": conversion.engine,
        "answeredBy": _answered_by(conversion),
        "lowConfidence": _low_confidence(conversion),
        "created": conversion.created.isoformat(),
        "queuePosition": conversion.queue_position,
        "source": conversion.source,
        "text": conversion.output_text(),
        "previewHtml": "",
        "error": str(conversion.error_message),
        "adjustments": [
            str(ADJUSTMENT_LABELS.get(step, step)) for step in conversion.adjustments
        ],
        "imageUrl": reverse("academic-convert-image", args=[conversion.pk]),
        "statusUrl": reverse("academic-convert-status", args=[conversion.pk]),
        "againUrl": reverse("academic-convert-again", args=[conversion.pk]),
    }
    if conversion.kind == Conversion.Kind.TABLE and conversion.source:
        data["previewHtml"] = preview_html(conversion.source, conversion.target)
    return data


def _answered_by(conversion):
    if conversion.status != Conversion.Status.DONE:
        return ""
    if conversion.engine == Conversion.Engine.OFFLINE:
        return _("Read by the offline formula engine (%(name)s)") % {
            "name": ocr_engine.MODEL_NAME
        }
    return _("Read by the vision model %(name)s") % {"name": conversion.model}


def _low_confidence(conversion):
    if not conversion.doubt:
        return ""
    reason = DOUBT_LABELS.get(conversion.doubt, "")
    return _("Low confidence: %(reason)s Check the source against the image.") % {
        "reason": reason
    }


def _ui_strings():
    return {
        "queued": _("Waiting for the model…"),
        "queuePosition": _("Queued for the model: position %(position)s"),
        "running": _("Reading the image…"),
        "uploading": _("Uploading…"),
        "copied": _("Copied"),
        "katexFailed": _("KaTeX cannot render this formula: %(error)s"),
        "adjusted": _("Adjusted before reading: %(steps)s"),
        "sendToChat": _("Send to chat"),
        "networkError": _("The server could not be reached. Try again."),
        "noImage": _("The clipboard holds no image. Copy a screenshot first."),
    }
