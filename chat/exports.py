"""A user's conversations as files they can keep, and back again.

Markdown is for reading: answers as the model wrote them, so math and code
stay source, and reasoning, when asked for, in a folded <details> section.
JSON is for keeping: every stored field, in a documented shape that the
import below reads back. An archive is a zip of both for every conversation.

A conversation with branches (regenerated answers, edited questions) is a
tree: the Markdown holds the branch on show, as the reader sees it; the JSON
holds every version, each message naming its parent by position in the
list, and which message ends the branch on show. A file without parents
(made before branches) is read back as one chain, in order.
"""

import datetime
import io
import json
import re
import zipfile

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from chat import tree
from chat.models import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    PRESET_PROMPT_MAX_CHARS,
    Conversation,
    Message,
)

FORMAT_NAME = "research-assistant.conversation"
FORMAT_VERSION = 1

# What one import may bring in, so that a file cannot fill the database.
MAX_IMPORT_BYTES = 20 * 1024 * 1024
MAX_IMPORT_CONVERSATIONS = 1000
MAX_IMPORT_MESSAGES = 5000
MAX_FIELD_CHARS = 1_000_000

# Stored per message, in this order, in the JSON export.
MESSAGE_FIELDS = [
    "role",
    "content",
    "reasoning",
    "model",
    "status",
    "error_code",
    "error_detail",
    "warning_code",
    "queue_ms",
    "first_token_ms",
    "reasoning_ms",
    "duration_ms",
    "prompt_estimate",
    "max_tokens",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
]
NUMBER_FIELDS = {name for name in MESSAGE_FIELDS if name.endswith(("_ms", "_tokens"))}
NUMBER_FIELDS |= {"prompt_estimate", "max_tokens"}
TEXT_FIELDS = set(MESSAGE_FIELDS) - NUMBER_FIELDS
FINAL_STATUSES = {choice for choice in Message.Status.values} - {
    Message.Status.QUEUED,
    Message.Status.STREAMING,
}


class ImportProblem(ValueError):
    """A file the import cannot read; the message is for the user."""

    def __init__(self, message):
        super().__init__(str(message))
        self.user_message = message


def conversation_markdown(conversation, include_reasoning=True):
    lines = [f"# {conversation.title or _('Untitled')}", ""]
    lines.append(
        _("Exported on %(date)s. Model: %(model)s.")
        % {"date": _local(timezone.now()), "model": conversation.model or "-"}
    )
    lines += _settings_markdown(conversation)
    for message in tree.active_path(conversation):
        lines += ["", "---", ""]
        if message.role == Message.Role.USER:
            lines += [f"## {_('Question')}", "", message.content]
            continue
        lines += [f"## {_('Answer')} ({message.model})", ""]
        if include_reasoning and message.reasoning:
            lines += [
                "<details>",
                f"<summary>{_('Reasoning')}</summary>",
                "",
                message.reasoning,
                "",
                "</details>",
                "",
            ]
        lines.append(message.content)
        if message.status != Message.Status.STOP:
            lines += ["", f"*{message.get_status_display()}*"]
    return "\n".join(lines).rstrip() + "\n"


def _settings_markdown(conversation):
    """The conversation's settings, when it has any besides the defaults."""
    lines = []
    params = []
    if conversation.temperature is not None:
        params.append(_("temperature %(value)s") % {"value": conversation.temperature})
    if conversation.max_output_tokens:
        params.append(
            ngettext(
                "output limit %(tokens)s token",
                "output limit %(tokens)s tokens",
                conversation.max_output_tokens,
            )
            % {"tokens": conversation.max_output_tokens}
        )
    if not conversation.thinking:
        params.append(_("thinking off"))
    if params:
        lines += ["", _("Settings: %(settings)s.") % {"settings": ", ".join(params)}]
    if conversation.preset_prompt:
        lines += [
            "",
            f"**{_('Instructions')}**",
            "",
            *_fenced(conversation.preset_prompt),
        ]
    return lines


def _fenced(text):
    """`text` as a fenced block, so a Markdown viewer shows it as typed.

    Instructions are often written for the model in its own markup (tags,
    asterisks, a heading); quoted as Markdown, the viewer would render that
    markup, and run any HTML in it. The fence is longer than any run of
    backticks in the text, so no line of it can close the block.
    """
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}text", *text.splitlines(), fence]


def conversation_data(conversation):
    messages = list(conversation.messages.all())
    position = {message.pk: index for index, message in enumerate(messages)}
    shown = tree.active_path(conversation, messages)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "title": conversation.title,
        "model": conversation.model,
        "pinned": conversation.pinned,
        # Added within version 1: a file without it imports with defaults.
        "settings": {
            "prompt": conversation.preset_prompt,
            "temperature": conversation.temperature,
            "max_output_tokens": conversation.max_output_tokens,
            "thinking": conversation.thinking,
        },
        "created": conversation.created.isoformat(),
        "updated": conversation.updated.isoformat(),
        "messages": [
            {
                **{name: getattr(message, name) for name in MESSAGE_FIELDS},
                "created": message.created.isoformat(),
                "parent": position.get(message.parent_id),
            }
            for message in messages
        ],
        "shown_leaf": position[shown[-1].pk] if shown else None,
    }


def conversation_json(conversation):
    return json.dumps(conversation_data(conversation), ensure_ascii=False, indent=2)


def archive(conversations):
    """A zip holding each conversation as JSON and as Markdown."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zip_file:
        for conversation in conversations.prefetch_related("messages"):
            stem = export_stem(conversation)
            zip_file.writestr(f"{stem}.json", conversation_json(conversation))
            zip_file.writestr(f"{stem}.md", conversation_markdown(conversation))
    return buffer.getvalue()


def export_stem(conversation):
    """A file name for the conversation: its number and a safe form of its title."""
    safe = re.sub(r"[^\w\-]+", "-", conversation.title or "", flags=re.UNICODE)
    safe = safe.strip("-")[:40]
    return f"conversation-{conversation.pk}" + (f"-{safe}" if safe else "")


def read_import(upload_name, data):
    """The conversations in an uploaded JSON file or zip archive, checked."""
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportProblem(
            gettext_lazy("The file is larger than %(limit)s MB.")
            % {"limit": MAX_IMPORT_BYTES // (1024 * 1024)}
        )
    if zipfile.is_zipfile(io.BytesIO(data)):
        return _read_archive(data)
    return [_parse_conversation(_load_json(data), upload_name)]


@transaction.atomic
def import_conversations(user, items):
    """Store checked conversations as new ones of `user`; returns them."""
    created = []
    for item in items:
        conversation = Conversation.objects.create(
            user=user,
            title=item["title"],
            title_is_auto=False,
            model=item["model"],
            pinned=item["pinned"],
            **item["settings"],
        )
        messages = Message.objects.bulk_create(
            Message(conversation=conversation, **fields)
            for fields, _created in item["messages"]
        )
        # auto_now_add stamped every row with now; put the real times back.
        for message, (_fields, when) in zip(messages, item["messages"]):
            if when is not None:
                Message.objects.filter(pk=message.pk).update(
                    created=when, shown_at=when
                )
        _link_parents(messages, item["parents"])
        if messages:
            # Marks the branch on show as the one chosen at each of its forks.
            tree.show(conversation, messages[item["shown_leaf"]])
        Conversation.objects.filter(pk=conversation.pk).update(
            created=item["created"] or conversation.created,
            updated=item["updated"] or conversation.updated,
        )
        created.append(conversation)
    return created


def _link_parents(messages, parents):
    for message, parent in zip(messages, parents):
        message.parent_id = messages[parent].pk if parent is not None else None
    Message.objects.bulk_update(messages, ["parent"])


def _read_archive(data):
    items = []
    with zipfile.ZipFile(io.BytesIO(data)) as zip_file:
        names = [n for n in zip_file.namelist() if n.lower().endswith(".json")]
        if not names:
            raise ImportProblem(gettext_lazy("The archive holds no conversation."))
        if len(names) > MAX_IMPORT_CONVERSATIONS:
            raise ImportProblem(
                gettext_lazy("The archive holds more than %(limit)s conversations.")
                % {"limit": MAX_IMPORT_CONVERSATIONS}
            )
        total = 0
        for name in names:
            # A zip may claim a small size and inflate to gigabytes; read
            # each member only up to what is left of the budget.
            with zip_file.open(name) as member:
                content = member.read(MAX_IMPORT_BYTES - total + 1)
            total += len(content)
            if total > MAX_IMPORT_BYTES:
                raise ImportProblem(
                    gettext_lazy("The archive unpacks to more than %(limit)s MB.")
                    % {"limit": MAX_IMPORT_BYTES // (1024 * 1024)}
                )
            items.append(_parse_conversation(_load_json(content), name))
    return items


def _load_json(data):
    try:
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportProblem(
            gettext_lazy("This is not a conversation exported from this app.")
        ) from exc


def _parse_conversation(data, name):
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise ImportProblem(
            gettext_lazy("%(name)s is not a conversation exported from this app.")
            % {"name": name}
        )
    if data.get("version") != FORMAT_VERSION:
        raise ImportProblem(
            gettext_lazy(
                "%(name)s comes from a version of the app this one cannot read."
            )
            % {"name": name}
        )
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list) or len(raw_messages) > MAX_IMPORT_MESSAGES:
        raise ImportProblem(
            gettext_lazy("%(name)s has no readable list of messages.") % {"name": name}
        )
    messages = [_parse_message(m, name) for m in raw_messages]
    parents, shown_leaf = _parse_tree(data, raw_messages, name)
    return {
        "title": _text(data.get("title"), 200),
        "model": _text(data.get("model"), 200),
        "pinned": data.get("pinned") is True,
        "settings": _parse_settings(data.get("settings"), name),
        "created": _when(data.get("created")),
        "updated": _when(data.get("updated")),
        "messages": messages,
        "parents": parents,
        "shown_leaf": shown_leaf,
    }


def _parse_settings(data, name):
    """A conversation's settings from a file: Conversation fields, checked."""
    if data is None:
        data = {}
    invalid = ImportProblem(
        gettext_lazy("%(name)s has settings this app cannot read.") % {"name": name}
    )
    if not isinstance(data, dict):
        raise invalid

    prompt = data.get("prompt") or ""
    temperature = data.get("temperature")
    limit = data.get("max_output_tokens")
    thinking = data.get("thinking", True)
    if not isinstance(prompt, str) or not isinstance(thinking, bool):
        raise invalid
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE
    ):
        raise invalid
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
    ):
        raise invalid
    # The output limit is checked against the model's cap when a reply is
    # written, since this app's cap for the model may differ from the one
    # the file was exported under.
    return {
        "preset_prompt": prompt[:PRESET_PROMPT_MAX_CHARS],
        "temperature": float(temperature) if temperature is not None else None,
        "max_output_tokens": limit,
        "thinking": thinking,
    }


def _parse_tree(data, raw_messages, name):
    """Each message's parent by position, and the position the shown branch
    ends at. A parent must come earlier in the list, so the tree can have
    no loop; a file without parents is one chain."""
    count = len(raw_messages)
    if not any(isinstance(m, dict) and "parent" in m for m in raw_messages):
        return [i - 1 if i else None for i in range(count)], count - 1

    invalid = ImportProblem(
        gettext_lazy("%(name)s has a message this app cannot read.") % {"name": name}
    )
    parents = []
    for index, message in enumerate(raw_messages):
        parent = message.get("parent")
        if parent is not None and not _is_position(parent, index):
            raise invalid
        parents.append(parent)
    shown_leaf = data.get("shown_leaf")
    if shown_leaf is None:
        shown_leaf = count - 1
    elif not _is_position(shown_leaf, count):
        raise invalid
    return parents, shown_leaf


def _is_position(value, below):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < below


def _parse_message(data, name):
    invalid = ImportProblem(
        gettext_lazy("%(name)s has a message this app cannot read.") % {"name": name}
    )
    if not isinstance(data, dict) or data.get("role") not in Message.Role.values:
        raise invalid

    fields = {}
    for field in TEXT_FIELDS:
        value = data.get(field) or ""
        if not isinstance(value, str):
            raise invalid
        fields[field] = value[:MAX_FIELD_CHARS]
    for field in NUMBER_FIELDS:
        value = data.get(field)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise invalid
        fields[field] = value

    # A reply that was still being written when it was exported never will
    # be now; it comes back as interrupted, with its text.
    if data["role"] == Message.Role.USER:
        fields["status"] = Message.Status.STOP
    elif fields["status"] not in FINAL_STATUSES:
        fields["status"] = Message.Status.INCOMPLETE
    fields["model"] = fields["model"][:200]
    fields["error_code"] = fields["error_code"][:32]
    fields["warning_code"] = fields["warning_code"][:32]
    return fields, _when(data.get("created"))


def _text(value, limit):
    return value[:limit] if isinstance(value, str) else ""


def _when(value):
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_datetime(value)
    except ValueError:
        return None
    if parsed is not None and timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, datetime.UTC)
    return parsed


def _local(moment):
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")
