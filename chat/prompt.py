"""The messages sent to the model for a reply, and their size in tokens.

The rules come from how R1 servers behave: earlier answers only, never the
reasoning (DeepSeek's API rejected it on input, and it wastes context); one
system message, first; user and assistant strictly alternating, because R1's
template misbehaves on two user turns in a row.
"""

import math
import unicodedata
from collections import Counter

from chat import tree
from chat.attachments import prompt_text
from chat.models import Message
from chat.presets import leading_system_prompt

# Tokens the chat template adds around each message, and a margin kept free
# so that a slightly low estimate does not overflow the context.
PER_MESSAGE_OVERHEAD = 4
SAFETY_MARGIN = 64


def build_messages(conversation, reply, system_prompt=None):
    """The prompt for `reply`: every turn before it on its own branch,
    alternating, answers only. Other versions of a turn (regenerated
    answers, edited questions) are never sent.

    The system message is the deployment's CHAT_SYSTEM_PROMPT followed by the
    conversation's own instructions, unless `system_prompt` replaces both.
    """
    if system_prompt is None:
        system_prompt = leading_system_prompt(conversation)

    turns = []
    for message in _without_refused_questions(tree.earlier_turns(conversation, reply)):
        content = message.content
        if message.role == Message.Role.USER:
            content = prompt_text(content, message.attachments.all())
        _append_turn(turns, message.role, content)

    # A conversation must open with the user; an orphan answer at the start
    # (e.g. after an import) has no question to belong to.
    while turns and turns[0]["role"] != Message.Role.USER:
        turns.pop(0)

    if conversation.context:
        system_prompt = "\n\n".join(filter(None, [system_prompt, conversation.context]))

    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    return messages + turns


# Replies that ended because their prompt did not fit the model: the app's
# own check, or the server's. Their question never reached the model.
PROMPT_REFUSED_CODES = {"input_too_long", "context_overflow"}


def _without_refused_questions(path):
    """The path without questions whose reply was refused as too long.

    Such a question stays in the conversation, but sent again with every
    later turn it would make each of them too long as well.
    """
    kept = []
    for index, message in enumerate(path):
        answer = path[index + 1] if index + 1 < len(path) else None
        refused = (
            message.role == Message.Role.USER
            and answer is not None
            and answer.error_code in PROMPT_REFUSED_CODES
        )
        if refused or message.error_code in PROMPT_REFUSED_CODES:
            continue
        kept.append(message)
    return kept


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


def trim_to_fit(messages, limit):
    """Leave out the oldest exchanges until the prompt fits `limit` tokens.

    The system message and the newest question always stay; returns the
    messages and how many were left out. The result may still be too long
    when the newest question alone is.
    """
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(system) :]
    dropped = 0
    while len(turns) > 1 and estimate_tokens(system + turns) > limit:
        # Drop a question with its answer, so the roles still alternate.
        turns = turns[2:] if len(turns) > 2 else turns[1:]
        dropped += 1
    return system + turns, dropped


def estimate_tokens(messages):
    """A token count for a list of chat messages that errs on the high side.

    No tokenizer for DeepSeek's vocabulary ships as a package here, so this
    counts one token per CJK character (the tokenizer often does better),
    one per digit (DeepSeek's and Qwen's tokenizers split numbers into
    single digits, so a table of figures runs near a token a character) and
    one per four other characters. English prose runs nearer five
    characters a token; code and LaTeX nearer three, so a prompt full of
    them may be under-counted a little, and the server's 400 for an
    overflow is handled as well. Checked against llama.cpp's Qwen tokenizer
    on English text, the old rule of three characters over-counted 1.9x.
    """
    total = 0
    for message in messages:
        total += PER_MESSAGE_OVERHEAD + count_text_tokens(message["content"])
    return total


def count_text_tokens(text):
    # Each distinct character is classified once: a prompt of tens of
    # thousands of characters holds a few hundred distinct ones, and a loop
    # over every character cost a worker several milliseconds a reply.
    wide = 0
    digits = 0
    other = 0
    for char, count in Counter(text).items():
        if _is_wide(char):
            wide += count
        elif char.isdigit():
            digits += count
        else:
            other += count
    return wide + digits + math.ceil(other / 4)


def _is_wide(char):
    return unicodedata.east_asian_width(char) in ("W", "F")


def context_room(profile, prompt_tokens):
    """Output tokens the context leaves after the prompt."""
    return max(0, profile.context_window - prompt_tokens - SAFETY_MARGIN)


def output_budget(profile, prompt_tokens, override=None, requested=None):
    """max_tokens for a reply: never the whole context.

    The configured cap, or the conversation's own limit (`requested`, at most
    the cap), or less when the context leaves less. A retry "with a larger
    limit" may ask for more than either, up to what the context leaves.
    """
    room = context_room(profile, prompt_tokens)
    if override:
        return min(override, room)
    cap = profile.max_output_tokens
    if requested:
        cap = min(requested, cap)
    return min(cap, room)


def can_extend(reply, profile):
    """Whether a retry with a larger output limit could give more room."""
    if reply.status not in (
        Message.Status.LENGTH_IN_REASONING,
        Message.Status.LENGTH_IN_ANSWER,
    ):
        return False
    if profile is None or not reply.max_tokens or reply.prompt_estimate is None:
        return False
    return context_room(profile, reply.prompt_estimate) > reply.max_tokens


def larger_limit(reply, profile):
    """The output limit for a retry with more room: double, within the context."""
    room = context_room(profile, reply.prompt_estimate or 0)
    return min(room, 2 * (reply.max_tokens or profile.max_output_tokens))
