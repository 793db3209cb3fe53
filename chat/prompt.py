"""The messages sent to the model for a reply, and their size in tokens.

The rules come from how R1 servers behave: earlier answers only, never the
reasoning (DeepSeek's API rejected it on input, and it wastes context); one
system message, first; user and assistant strictly alternating, because R1's
template misbehaves on two user turns in a row.
"""

import math
import unicodedata

from django.conf import settings

from chat.models import Message

# Tokens the chat template adds around each message, and a margin kept free
# so that a slightly low estimate does not overflow the context.
PER_MESSAGE_OVERHEAD = 4
SAFETY_MARGIN = 64


def build_messages(conversation, reply, system_prompt=None):
    """The prompt for `reply`: every turn before it, alternating, answers only."""
    system_prompt = (
        system_prompt if system_prompt is not None else settings.CHAT_SYSTEM_PROMPT
    )
    earlier = conversation.messages.filter(pk__lt=reply.pk).order_by("created", "id")

    turns = []
    for message in earlier.only("role", "content"):
        _append_turn(turns, message.role, message.content)

    # A conversation must open with the user; an orphan answer at the start
    # (e.g. after an import) has no question to belong to.
    while turns and turns[0]["role"] != Message.Role.USER:
        turns.pop(0)

    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    return messages + turns


def _append_turn(turns, role, content):
    text = content.strip()
    if not text:
        # A reply that failed or was stopped before any answer adds nothing
        # the model could use; leaving it out keeps the roles alternating
        # once the neighbouring questions are merged below.
        return

    if turns and turns[-1]["role"] == role:
        turns[-1]["content"] += "\n\n" + text
    else:
        turns.append({"role": role, "content": text})


def estimate_tokens(messages):
    """A conservative token count for a list of chat messages.

    No tokenizer for DeepSeek's vocabulary ships as a package here, so this
    over-counts on purpose: one token per CJK character (the tokenizer often
    does better) and one per three other characters (English averages nearer
    four). Over-counting wastes a little context; under-counting gets a 400.
    """
    total = 0
    for message in messages:
        total += PER_MESSAGE_OVERHEAD + count_text_tokens(message["content"])
    return total


def count_text_tokens(text):
    wide = 0
    other = 0
    for char in text:
        if _is_wide(char):
            wide += 1
        else:
            other += 1
    return wide + math.ceil(other / 3)


def _is_wide(char):
    return unicodedata.east_asian_width(char) in ("W", "F")


def output_budget(profile, prompt_tokens):
    """max_tokens for a reply: the configured cap, or what the context leaves."""
    room = profile.context_window - prompt_tokens - SAFETY_MARGIN
    return max(0, min(profile.max_output_tokens, room))
