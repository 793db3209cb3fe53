"""Conversation settings and saved presets: the panel's requests and a page.

The settings panel posts with `Accept: application/json` and shows the
answer in place; without the page's script the same forms post normally and
come back to the page with a message, so nothing depends on JavaScript.
"""

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from chat import presets
from chat.models import Conversation, Preset


def _get_conversation_for_user(request, pk):
    return get_object_or_404(Conversation.objects.visible(), pk=pk, user=request.user)


def _get_preset_for_user(request, pk):
    return get_object_or_404(Preset, pk=pk, user=request.user)


def _wants_json(request):
    return "application/json" in request.headers.get("Accept", "")


def _answer(request, fallback, message, ok=True, status=200, **data):
    """JSON for the panel's script, or a redirect with the message."""
    if _wants_json(request):
        return JsonResponse({"ok": ok, "message": message, **data}, status=status)
    (flash.success if ok else flash.error)(request, message)
    return redirect(fallback)


@require_POST
@login_required
def conversation_settings(request, pk):
    """Save the conversation's settings, typed in or taken from a preset."""
    conversation = _get_conversation_for_user(request, pk)

    ref = request.POST.get("preset")
    if ref:
        preset = presets.find_preset(request.user, ref)
        if preset is None:
            message = _("That preset no longer exists.")
            return _answer(request, conversation, message, ok=False, status=404)
        values = presets.values_of(preset)
        # A preset belongs to no model; its limit is kept within this one's.
        profile = presets.profile_for(conversation)
        limit = values["max_output_tokens"]
        if profile is not None and limit and limit > profile.max_output_tokens:
            values["max_output_tokens"] = profile.max_output_tokens
    else:
        form = presets.SettingsForm(
            request.POST, profile=presets.profile_for(conversation)
        )
        if not form.is_valid():
            message = presets.first_error(form)
            return _answer(request, conversation, message, ok=False, status=400)
        values = form.cleaned_data

    presets.apply_settings(conversation, values)
    return _answer(
        request,
        conversation,
        _("Saved. The next reply uses these settings."),
        settings=presets.conversation_settings(conversation),
    )


@require_POST
@login_required
def preset_create(request):
    """Save the settings posted with a name as a new preset of the user."""
    fallback = request.POST.get("conversation") and _conversation_url(request)
    name_form = presets.PresetNameForm(request.POST, user=request.user)
    settings_form = presets.SettingsForm(request.POST)
    for form in (name_form, settings_form):
        if not form.is_valid():
            message = presets.first_error(form)
            return _answer(
                request, fallback or "chat-presets", message, ok=False, status=400
            )

    values = settings_form.cleaned_data
    preset = Preset.objects.create(
        user=request.user,
        name=name_form.cleaned_data["name"],
        prompt=values["prompt"],
        temperature=values["temperature"],
        max_output_tokens=values["max_output_tokens"],
        thinking=values["thinking"],
    )
    message = _("Saved as preset “%(name)s”.") % {"name": preset.name}
    return _answer(
        request,
        fallback or "chat-presets",
        message,
        preset=presets.preset_data(preset, str(preset.pk)),
    )


def _conversation_url(request):
    conversation = Conversation.objects.visible().filter(
        pk=_as_int(request.POST.get("conversation")), user=request.user
    )
    found = conversation.first()
    return found.get_absolute_url() if found else None


@login_required
def preset_list(request):
    context = {
        "builtin_presets": presets.BUILTIN_PRESETS,
        "presets": Preset.objects.filter(user=request.user),
    }
    return render(request, "chat/presets.html", context)


@require_POST
@login_required
def preset_rename(request, pk):
    preset = _get_preset_for_user(request, pk)
    form = presets.PresetNameForm(request.POST, user=request.user, exclude_pk=pk)
    if not form.is_valid():
        flash.error(request, presets.first_error(form))
        return redirect("chat-presets")

    preset.name = form.cleaned_data["name"]
    preset.save(update_fields=["name"])
    flash.success(request, _("Renamed to “%(name)s”.") % {"name": preset.name})
    return redirect("chat-presets")


@require_POST
@login_required
def preset_delete(request, pk):
    preset = _get_preset_for_user(request, pk)
    preset.delete()
    # Conversations keep the settings they copied from it.
    flash.info(request, _("Preset “%(name)s” deleted.") % {"name": preset.name})
    return redirect("chat-presets")


def _as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
