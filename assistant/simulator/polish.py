"""The simulator's polishing mode: answers to "edit the text between <text>
and </text>" requests, as the academic workspace sends them.

The edits are the kind a model makes to academic prose: a stiff phrase
replaced, a doubled word removed, an article fixed, "较好" made "更好".
Placeholders (⟦3⟧) are copied untouched, as a well-behaved model does.

On request (`damage=` in a [[sim ...]] directive or the "simulator" body
field) the answer also carries the damage real models were seen to do, one
kind per request, so that a test can show each check catching its fault:

    key          a citation key changed, or a citation added to the prose
    brace        a brace dropped, or a stray one added
    placeholder  a placeholder lost
    environment  an environment name translated, or a translated one added

With the suffix "_once" (damage=key_once) the model heeds a prompt that
names the fault, as a model told why its last answer was refused usually
does, and answers that retry undamaged.
"""

import re

TEXT_BLOCK = re.compile(r"<text>\n?(?P<text>.*?)\n?</text>", re.DOTALL)
PLACEHOLDER_SPLIT = re.compile(r"(⟦\d+⟧)")
PLACEHOLDER = re.compile(r"⟦\d+⟧")
DAMAGES = ("key", "brace", "placeholder", "environment")
ONCE_SUFFIX = "_once"
# How the app's retry prompt names each fault (academic.checks codes).
FAULT_NAMES = {
    "key": "keys",
    "brace": "braces",
    "placeholder": "placeholder",
    "environment": "environments",
}

ARTICLE_NOUNS = "error|example|experiment|algorithm|input|output|important|effect"
# (pattern, replacement) pairs, applied in order to the text outside
# placeholders. Each is an edit an editor would defend.
ENGLISH_EDITS = [
    (re.compile(r"\b(\w+) \1\b"), r"\1"),
    (re.compile(r"\bIn addition,"), "Moreover,"),
    (re.compile(r"\bin order to\b"), "to"),
    (re.compile(r"\ba large margin\b"), "a wide margin"),
    (re.compile(r"\bis skipped\b"), "is omitted"),
    (re.compile(r"\ba lot of\b"), "many"),
    (re.compile(r"\bvery (?=\w)"), ""),
    (re.compile(r"\bbig\b"), "large"),
    (re.compile(r"\bshows that\b"), "demonstrates that"),
    (re.compile(r"\bwe run\b"), "we ran"),
    (re.compile(rf"\ba (?=(?:{ARTICLE_NOUNS})\b)"), "an "),
    (re.compile(r"\b(it|this|that|which) have\b"), r"\1 has"),
    (re.compile(r"\b(\w+tion) are\b"), r"\1 is"),
    (re.compile(r"\bwe (\w+)ies\b"), r"we \1y"),
    (re.compile(r"\b(We|we) presents\b"), r"\1 present"),
    (re.compile(r"\b(objects|methods|results) is\b"), r"\1 are"),
]
CHINESE_EDITS = [
    (re.compile("提出了"), "提出"),
    (re.compile("较好"), "更好"),
    (re.compile("非常"), "十分"),
    (re.compile("进行了"), "进行"),
    (re.compile("很多"), "许多"),
]
CITATION = re.compile(r"\\cite[a-z]*\*?(?:\[[^\]]*\])*\{(?P<key>[^,}]+)")
ENVIRONMENT = re.compile(r"\\(?P<kind>begin|end)\{(?P<name>[A-Za-z*]+)\}")
ENVIRONMENT_NAMES_ZH = {"abstract": "摘要", "theorem": "定理", "proof": "证明"}
SENTENCE_END = re.compile(r"[.。](?=\s|$)")


def check_damage(value, error_class):
    """`value` as a damage setting; error_class(400, why) when unknown."""
    if value.removesuffix(ONCE_SUFFIX) not in DAMAGES:
        raise error_class(
            400, f"Simulator damage must be one of {DAMAGES}, each optionally _once"
        )
    return value


def answer_for(question, damage=None):
    """The polished answer to a polishing request, or None for any other."""
    match = TEXT_BLOCK.search(question)
    if match is None:
        return None

    text = polish(match["text"])
    if damage and not _heeded(damage, question[: match.start()]):
        text = DAMAGERS[damage.removesuffix(ONCE_SUFFIX)](text)
    return f"<text>\n{text}\n</text>"


def _heeded(damage, instructions):
    if not damage.endswith(ONCE_SUFFIX):
        return False
    kind = damage.removesuffix(ONCE_SUFFIX)
    return re.search(rf"\b{FAULT_NAMES[kind]}\b", instructions) is not None


def polish(text):
    """`text` with the edits applied outside its placeholders."""
    pieces = PLACEHOLDER_SPLIT.split(text)
    return "".join(
        piece if PLACEHOLDER.fullmatch(piece) else _edit(piece) for piece in pieces
    )


def _edit(prose):
    for pattern, replacement in ENGLISH_EDITS + CHINESE_EDITS:
        prose = pattern.sub(replacement, prose)
    return prose


def change_key(text):
    match = CITATION.search(text)
    if match:
        return text[: match.end("key")] + "x" + text[match.end("key") :]
    return _after_first_sentence(text, r" \cite{smith2020}")


def drop_brace(text):
    position = text.rfind("}")
    if position >= 0:
        return text[:position] + text[position + 1 :]
    return "{" + text


def lose_placeholder(text):
    found = list(PLACEHOLDER.finditer(text))
    if not found:
        return text
    last = found[-1]
    return text[: last.start()] + text[last.end() :]


def translate_environment(text):
    if ENVIRONMENT.search(text):
        return ENVIRONMENT.sub(_translated_marker, text)
    return "\\begin{摘要}\n" + text + "\n\\end{摘要}"


def _translated_marker(match):
    name = ENVIRONMENT_NAMES_ZH.get(match["name"], "环境")
    return f"\\{match['kind']}{{{name}}}"


def _after_first_sentence(text, addition):
    match = SENTENCE_END.search(text)
    if match is None:
        return text + addition
    return text[: match.start()] + addition + text[match.start() :]


DAMAGERS = {
    "key": change_key,
    "brace": drop_brace,
    "placeholder": lose_placeholder,
    "environment": translate_environment,
}
