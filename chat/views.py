import datetime
from urllib.parse import quote

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_POST

from assistant import failures
from assistant.catalog import offered_models
from assistant.models import ModelProfile
from chat import actions, attachments, exports, presets, search, tree
from chat.models import Conversation, Message, SharedLink
from chat.prompt import can_extend
from chat.rendering import render_markdown

SIDEBAR_CONVERSATIONS = 50
LIST_PAGE_SIZE = 100
SEARCH_PAGE_SIZE = 20
# The conversation the next page offers to bring back, after a delete.
UNDO_SESSION_KEY = "chat_undo_conversation"


def offered_model_names():
    return {profile.name for profile in offered_models()}


def offered_profile(name):
    """The profile of model `name` if users may pick it, else None."""
    return next((p for p in offered_models() if p.name == name), None)


@login_required
def home(request):
    return _room(request, conversation=None)


@login_required
def conversation(request, pk):
    conversation = _get_conversation_for_user(request, pk)
    _show_asked_branch(request, conversation)
    return _room(request, conversation)


def _show_asked_branch(request, conversation):
    """Open the branch holding `?show=<message>`, as a search result asks.

    The choice is kept, as a switch on the page would keep it, and the
    conversation's other tabs follow.
    """
    shown_id = _as_int(request.GET.get("show"))
    if shown_id is None:
        return
    shown = conversation.messages.filter(pk=shown_id).first()
    if shown is None:
        return
    shown_path = tree.active_path(conversation, tree.skeleton(conversation))
    if shown.pk in {m.pk for m in shown_path}:
        return
    actions.show_branch(conversation, shown)
    announce_path(conversation)


def _as_int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _get_conversation_for_user(request, pk):
    return get_object_or_404(Conversation.objects.visible(), pk=pk, user=request.user)


def _room(request, conversation):
    models = offered_models()
    messages = []
    if conversation is not None:
        profiles = {profile.name: profile for profile in models}
        messages = path_data(conversation, profiles)

    preset_choices = presets.presets_for(request.user)
    context = {
        "conversation": conversation,
        "shared_link": _active_share(request, conversation),
        "undo_conversation_id": request.session.pop(UNDO_SESSION_KEY, None),
        "conversation_groups": group_by_date(
            request.user.conversations.in_sidebar_order()[:SIDEBAR_CONVERSATIONS]
        ),
        "models": models,
        "selected_model": _selected_model(conversation, models),
        "presets": preset_choices,
        "page_data": {
            "conversationId": conversation.pk if conversation else None,
            "messages": messages,
            "maxMessageChars": settings.MAX_MESSAGE_CHARS,
            "attachUrl": reverse("chat-attach"),
            "csrfToken": get_token(request),
            "serverDetailCodes": sorted(failures.SERVER_DETAIL_CODES),
            "strings": _ui_strings(),
            "presets": preset_choices,
            "modelSettings": _model_settings(models),
        },
    }
    return render(request, "chat/room.html", context)


def _model_settings(models):
    """What the settings panel needs to know of each model offered."""
    return {
        profile.name: {
            "outputCap": profile.max_output_tokens,
            "canSwitchThinking": profile.can_switch_thinking,
        }
        for profile in models
    }


def _active_share(request, conversation):
    if conversation is None:
        return None
    link = conversation.shared_links.active().first()
    if link is None:
        return None
    return {"url": request.build_absolute_uri(link.get_absolute_url())}


def group_by_date(conversations, now=None):
    """Conversations under headings: pinned first, then by their last activity.

    Returns (key, heading, conversations) in display order, leaving out empty
    groups; the key names the group for the page's script.
    """
    today = timezone.localdate(now)
    boundaries = [
        ("today", today, _("Today")),
        ("yesterday", today - datetime.timedelta(days=1), _("Yesterday")),
        ("week", today - datetime.timedelta(days=7), _("Previous 7 days")),
        ("month", today - datetime.timedelta(days=30), _("Previous 30 days")),
        ("older", datetime.date.min, _("Older")),
    ]
    groups = {key: [] for key, _start, _heading in boundaries}
    groups["pinned"] = []
    for item in conversations:
        if item.pinned:
            groups["pinned"].append(item)
            continue
        day = timezone.localdate(item.updated)
        key = next(key for key, start, _heading in boundaries if day >= start)
        groups[key].append(item)

    headings = [("pinned", _("Pinned"))] + [(k, h) for k, _s, h in boundaries]
    return [(key, heading, groups[key]) for key, heading in headings if groups[key]]


def _selected_model(conversation, models):
    names = [profile.name for profile in models]
    for candidate in (conversation and conversation.model, settings.DEFAULT_MODEL):
        if candidate in names:
            return candidate
    return names[0] if names else ""


def path_data(conversation, profiles=None):
    """The messages of the branch on show, each with its place among its
    versions, as the page's script draws them."""
    messages = conversation.messages.prefetch_related("attachments")
    branches = tree.Tree.of(conversation, messages)
    return [
        {**message_data(m, profiles), "branch": branches.branch_data(m)}
        for m in branches.active_path(conversation)
    ]


def announce_path(conversation):
    """Tell every page open on the conversation to draw the branch on show."""
    group_send = async_to_sync(get_channel_layer().group_send)
    group_send(
        conversation.group_name,
        {"type": "conversation.path", "conversation_id": conversation.pk},
    )


def message_data(message, profiles=None):
    """A message as the page's script draws it.

    `profiles` maps model ids to profiles already at hand; without it, the
    reply's profile is looked up when the reply could use one.
    """
    data = {
        "id": message.pk,
        "parent_id": message.parent_id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "seq": message.last_seq,
    }
    if message.role == Message.Role.USER:
        data["attachments"] = [
            {"name": a.name, "kind": a.kind, "chars": len(a.text)}
            for a in message.attachments.all()
        ]
    if message.role == Message.Role.ASSISTANT:
        data.update(
            html=render_markdown(message.content),
            reasoning=message.reasoning,
            model=message.model,
            error_code=message.error_code,
            error_detail=message.error_detail,
            error_params=message.error_params,
            reasoning_ms=message.reasoning_ms,
            warning_code=message.warning_code,
            can_extend=_can_extend(message, profiles),
        )
        if message.is_open and message.reasoning_started_at is not None:
            # How long it has thought so far, not when it began: the page
            # counts on from its own clock, which may differ from the server's.
            thought = timezone.now() - message.reasoning_started_at
            data["thinking_ms"] = max(0, int(thought.total_seconds() * 1000))
    return data


def _can_extend(message, profiles):
    if message.status not in (
        Message.Status.LENGTH_IN_REASONING,
        Message.Status.LENGTH_IN_ANSWER,
    ):
        return False
    if profiles is not None and message.model in profiles:
        profile = profiles[message.model]
    else:
        profile = ModelProfile.objects.filter(name=message.model).first()
    return can_extend(message, profile)


def _ui_strings():
    """Texts the page's script shows, translated into the user's language."""
    strings = {
        "thinking": _("Thinking…"),
        "thoughtFor": _("Thought for %(seconds)s s"),
        "thoughtCut": _("Thinking was cut off (token limit)"),
        "thinkingInterrupted": _("Thinking did not finish"),
        "reasoning": _("Reasoning"),
        "queued": _("Waiting for the model…"),
        "queue.position": _("Queued for the model: position %(position)s"),
        "queue.eta": _(", about %(seconds)s s"),
        "busy.retry": _(
            "The model service is busy (%(status)s); asking again in "
            "%(seconds)s s (%(attempt)s of %(attempts)s)"
        ),
        "stop": _("Stop"),
        "send": _("Send"),
        "retry": _("Retry"),
        "retry.larger_limit": _("Retry with a larger output limit"),
        "retry.trim_history": _("Leave out older turns and retry"),
        "warning.input_truncated": _(
            "The model service read only part of what was sent; the start of "
            "the conversation was probably cut off. Start a new chat for a "
            "complete answer."
        ),
        "warning.low_output_budget": _(
            "Little room is left for the reply in this model's context, so a "
            "reasoning model may run out while thinking. A new chat leaves more."
        ),
        "regenerate": _("Regenerate"),
        "edit": _("Edit"),
        "edit.label": _("Edit the question"),
        "edit.send": _("Send as a new version"),
        "edit.cancel": _("Cancel"),
        "branch.label": _("Versions"),
        "branch.previous": _("Previous version"),
        "branch.next": _("Next version"),
        "branch.position": _("Version %(index)s of %(count)s"),
        "copy": _("Copy"),
        "copied": _("Copied"),
        "copyMarkdown": _("Copy as Markdown"),
        "attach.wait": _("Wait until the files are attached."),
        "attach.failed": _("The file could not be attached."),
        "attach.remove": _("Remove"),
        "attach.uploading": _("Attaching…"),
        "status.stopped": _("Stopped. The text so far is kept."),
        "status.stopped_unstarted": _(
            "Stopped before the model began: it left the queue."
        ),
        "status.length_in_reasoning": _(
            "The model reached its output limit while still thinking, so there "
            "is no answer. Retry, or ask a shorter question."
        ),
        "status.length_in_answer": _("The answer was cut off at the output limit."),
        "status.no_answer": _(
            "The model finished thinking but gave no answer. Retry to ask again."
        ),
        "status.incomplete": _(
            "The connection to the model closed before the reply ended. The text "
            "so far is kept."
        ),
        "status.reason_unknown": _(
            "The model service ended the reply without saying why; it may be "
            "incomplete."
        ),
        "refused.empty": _("Type a message first."),
        "refused.busy": _(
            "Wait for the reply to finish, or stop it, before sending the next message."
        ),
        "refused.too_long": _(
            "Your message has %(size)s characters; the limit is %(limit)s. "
            "Shorten it or split it into parts."
        ),
        "refused.unknown_model": _("That model is not available. Choose another."),
        "refused.unknown_preset": _(
            "That preset no longer exists. Choose another, or none."
        ),
        "settings.outputCap": _("At most %(cap)s for this model; empty for %(cap)s."),
        "refused.not_found": _("That conversation or message no longer exists."),
        "refused.bad_request": _(
            "The page sent something the server did not understand."
        ),
        "connection.lost": _("Connection lost. Reconnecting…"),
        "connection.back": _("Reconnected."),
        "serverSaid": _("The server said:"),
        "details": _("Details:"),
        "today": _("Today"),
    }
    for code in failures.MESSAGES:
        strings[f"error.{code}"] = str(failures.describe(code))
    return strings


@login_required
def conversation_list(request):
    conversations = request.user.conversations.in_sidebar_order()
    page = Paginator(conversations, LIST_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"page": page, "conversation_groups": group_by_date(page.object_list)}
    return render(request, "chat/conversations.html", context)


@require_POST
@login_required
def rename(request, pk):
    conversation = _get_conversation_for_user(request, pk)
    title = " ".join(request.POST.get("title", "").split())[:200]
    if title:
        actions.rename_conversation(conversation, title)
    else:
        flash.error(request, _("A title cannot be empty."))
    return redirect(conversation)


@require_POST
@login_required
def pin(request, pk):
    conversation = _get_conversation_for_user(request, pk)
    actions.set_pinned(conversation, request.POST.get("pinned") == "1")
    return redirect(_safe_next(request, conversation.get_absolute_url()))


@require_POST
@login_required
def delete(request, pk):
    conversation = _get_conversation_for_user(request, pk)
    actions.delete_conversation(conversation)
    flash.info(
        request,
        _("“%(title)s” was deleted.") % {"title": conversation.title or _("Untitled")},
        extra_tags="undo-delete",
    )
    request.session[UNDO_SESSION_KEY] = conversation.pk
    return redirect("chat-home")


@require_POST
@login_required
def restore(request, pk):
    conversation = get_object_or_404(
        Conversation, pk=pk, user=request.user, deleted_at__isnull=False
    )
    actions.restore_conversation(conversation)
    return redirect(conversation)


@require_POST
@login_required
def share(request, pk):
    conversation = _get_conversation_for_user(request, pk)
    actions.share_conversation(conversation)
    return redirect(conversation)


@require_POST
@login_required
def unshare(request, pk):
    conversation = _get_conversation_for_user(request, pk)
    actions.revoke_shares(conversation)
    flash.info(request, _("The link no longer opens this conversation."))
    return redirect(conversation)


@login_required
def shared(request, token):
    """A conversation someone shared, read-only, for any signed-in user."""
    link = get_object_or_404(
        SharedLink.objects.active().select_related("conversation__user"),
        token=token,
    )
    conversation = link.conversation
    context = {
        "conversation": conversation,
        "owner": conversation.user,
        "messages": [_shared_message(m) for m in tree.active_path(conversation)],
    }
    return render(request, "chat/shared.html", context)


def _shared_message(message):
    html = ""
    if message.role == Message.Role.ASSISTANT:
        # render_markdown sanitises with bleach; what it returns is safe.
        html = mark_safe(render_markdown(message.content))
    return {"message": message, "html": html}


@login_required
def export(request, pk, kind):
    conversation = _get_conversation_for_user(request, pk)
    stem = exports.export_stem(conversation)
    if kind == "json":
        body = exports.conversation_json(conversation)
        return _download(body, f"{stem}.json", "application/json; charset=utf-8")

    include_reasoning = request.GET.get("reasoning", "1") != "0"
    body = exports.conversation_markdown(conversation, include_reasoning)
    return _download(body, f"{stem}.md", "text/markdown; charset=utf-8")


@login_required
def export_all(request):
    body = exports.archive(request.user.conversations.visible())
    stamp = timezone.localdate().isoformat()
    return _download(body, f"conversations-{stamp}.zip", "application/zip")


@require_POST
@login_required
def import_conversations(request):
    upload = request.FILES.get("file")
    if upload is None:
        flash.error(request, _("Choose a file to import."))
        return redirect("chat-conversations")
    try:
        items = exports.read_import(upload.name, upload.read())
    except exports.ImportProblem as problem:
        flash.error(request, str(problem.user_message))
        return redirect("chat-conversations")

    imported = exports.import_conversations(request.user, items)
    flash.success(
        request,
        ngettext(
            "Imported %(count)s conversation.",
            "Imported %(count)s conversations.",
            len(imported),
        )
        % {"count": len(imported)},
    )
    if len(imported) == 1:
        return redirect(imported[0])
    return redirect("chat-conversations")


@require_POST
@login_required
def attach(request):
    """Read an uploaded file for the next question; its id goes with the send."""
    upload = request.FILES.get("file")
    if upload is None:
        return JsonResponse({"error": _("Choose a file to attach.")}, status=400)
    if upload.size > attachments.MAX_ATTACHMENT_BYTES:
        limit = attachments.MAX_ATTACHMENT_BYTES // (1024 * 1024)
        message = _("The file is larger than %(limit)s MB.") % {"limit": limit}
        return JsonResponse({"error": message}, status=400)
    try:
        attachment = attachments.attach(request.user, upload.name, upload.read())
    except attachments.AttachmentProblem as problem:
        return JsonResponse({"error": str(problem.message)}, status=400)

    return JsonResponse(
        {
            "id": attachment.pk,
            "name": attachment.name,
            "kind": attachment.kind,
            "chars": len(attachment.text),
        }
    )


@login_required
def search_view(request):
    query = request.GET.get("q", "")
    terms = search.query_terms(query)
    include_reasoning = request.GET.get("reasoning") == "1"
    page = None
    results = []
    if terms:
        found = search.search_messages(request.user, terms, include_reasoning)
        page = Paginator(found, SEARCH_PAGE_SIZE).get_page(request.GET.get("page"))
        results = [
            _search_result(message, terms, include_reasoning) for message in page
        ]

    context = {
        "query": query,
        "include_reasoning": include_reasoning,
        "terms": terms,
        "page": page,
        "results": results,
    }
    return render(request, "chat/search.html", context)


def _search_result(message, terms, include_reasoning):
    passage, in_reasoning = search.snippet(message, terms, include_reasoning)
    # The hit may sit on a branch other than the one on show; `show` opens it.
    url = (
        message.conversation.get_absolute_url()
        + f"?show={message.pk}#message-{message.pk}"
    )
    return {
        "message": message,
        "conversation": message.conversation,
        "passage": passage,
        "in_reasoning": in_reasoning,
        "url": url,
    }


def _download(body, filename, content_type):
    response = HttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = _attachment(filename)
    return response


def _attachment(filename):
    """A Content-Disposition that survives a Chinese title in any browser."""
    ascii_name = filename.encode("ascii", "ignore").decode() or "export"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def _safe_next(request, fallback):
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return fallback
