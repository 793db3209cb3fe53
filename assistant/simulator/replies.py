"""Canned reasoning and answers for the model simulator.

Every function here depends only on its arguments, so the same question always
gets the same text. Questions with CJK characters get Chinese text.
"""

import math
import re
import zlib
from itertools import cycle

CJK_PATTERN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
QUOTE_WORDS = 8
QUOTE_CJK_CHARS = 16
PARAGRAPH_WORDS = 60
PARAGRAPH_CJK_CHARS = 120

INTEGRAL = r"$$\int_0^1 x^2\,dx = \frac{1}{3}$$"

CODE_EXAMPLES = (
    '''def integrate_square(steps=1000):
    """Midpoint rule for the integral of x**2 from 0 to 1."""
    width = 1 / steps
    return sum(((i + 0.5) * width) ** 2 * width for i in range(steps))


print(round(integrate_square(), 4))  # 0.3333''',
    '''SPEED_OF_LIGHT = 299_792_458  # m/s


def rest_energy(mass_kg):
    """Energy in joules held by a mass at rest."""
    return mass_kg * SPEED_OF_LIGHT**2


print(f"{rest_energy(0.001):.3e} J")  # 8.988e+13 J''',
    '''from fractions import Fraction


def integral_of_power(n):
    """Exact value of the integral of x**n from 0 to 1."""
    return Fraction(1, n + 1)


print(integral_of_power(2))  # 1/3''',
)

FILLER_EN = (
    "Each step builds on the one before it, so the argument stays easy to follow.",
    "A careful reader checks the units on both sides before trusting a result.",
    "Small examples often reveal more than long derivations do.",
    "When two numbers disagree, the assumptions deserve a second look.",
    "Writing an idea down in plain words is a good test of understanding it.",
    "Sources matter too, so note where each figure and claim comes from.",
)

FILLER_ZH = (
    "每一步都建立在前一步的基础上，因此论证始终清晰易懂。",
    "细心的读者在相信结果之前，会先核对等式两边的单位。",
    "小例子往往比冗长的推导更能说明问题。",
    "当两个数字不一致时，值得重新审视其中的假设。",
    "用平实的语言把想法写下来，是检验理解程度的好办法。",
    "资料来源同样重要，应当注明每个数字和论断的出处。",
)


def has_cjk(text):
    return CJK_PATTERN.search(text) is not None


def estimate_tokens(text):
    # A stand-in for a real tokenizer: BPE vocabularies give roughly one token
    # per three or four Latin characters and about one per CJK character.
    # Dividing by three errs high, the safe side for context budgets.
    cjk_chars = len(CJK_PATTERN.findall(text))
    other_chars = len(text) - cjk_chars
    return cjk_chars + math.ceil(other_chars / 3)


def quote_question(question):
    """The first few words of the question, for echoing it back."""
    words = question.split()
    if not words:
        return "your question"

    text = " ".join(words)
    if has_cjk(text):
        if len(text) > QUOTE_CJK_CHARS:
            return text[:QUOTE_CJK_CHARS] + "…"
        return text

    if len(words) > QUOTE_WORDS:
        return " ".join(words[:QUOTE_WORDS]) + "…"
    return text


def build_reasoning(question):
    quote = quote_question(question)
    if has_cjk(question):
        return (
            f"用户问的是：“{quote}”。我先弄清楚这个问题真正想问什么，"
            "再决定怎样回答。首先应该用自己的话复述问题，看看有没有需要先定义的术语。"
            "然后用一个公式和一小段代码作为具体例子，会让回答更扎实。"
            "质能方程和一个简单的积分都很适合用来说明，所以两者都放进去。"
            "最后，回答要简洁、有条理。"
        )

    return (
        f'The user asks: "{quote}". Let me work out what is really being asked '
        "before answering. First I should restate the question in my own words "
        "and check whether any terms need defining. A worked example with a "
        "formula and a short piece of code would make the answer concrete. "
        "Mass-energy equivalence and a simple integral are good illustrations, "
        "so I will include both. Finally, the answer should be short and well "
        "structured."
    )


def build_answer(question, words=0):
    """A Markdown answer: heading, bold, list, formulas and a code block.

    With words > 0 the answer grows by about that many words of filler prose
    (CJK characters count as words for a Chinese answer).
    """
    quote = quote_question(question)
    code = CODE_EXAMPLES[zlib.crc32(question.encode("utf-8")) % len(CODE_EXAMPLES)]

    if has_cjk(question):
        answer = _chinese_answer(quote, code)
        filler = _chinese_filler(words)
    else:
        answer = _english_answer(quote, code)
        filler = _english_filler(words)

    if filler:
        return answer + "\n\n" + filler
    return answer


def _english_answer(quote, code):
    return (
        f'## On "{quote}"\n\n'
        "Here is a short, **structured** answer.\n\n"
        "- **Restate** the question and name the quantities involved.\n"
        "- **Relate** them through a known law, for example $E = mc^2$.\n"
        "- **Check** the result with a small worked example.\n\n"
        "A worked integral shows the kind of check meant here:\n\n"
        f"{INTEGRAL}\n\n"
        "The same idea in code:\n\n"
        f"```python\n{code}\n```\n\n"
        "In short: state the idea, connect it to a formula, and verify it."
    )


def _chinese_answer(quote, code):
    return (
        f"## 关于“{quote}”\n\n"
        "下面是一个简短而**有条理**的回答。\n\n"
        "- **复述**问题，并说明涉及哪些量。\n"
        "- **联系**已知的规律，例如 $E = mc^2$。\n"
        "- **验证**：用一个小例子检查结果。\n\n"
        "下面的积分就是这样一个检验：\n\n"
        f"{INTEGRAL}\n\n"
        "用代码表达同样的思路：\n\n"
        f"```python\n{code}\n```\n\n"
        "总之：先说清想法，再联系公式，最后加以验证。"
    )


def _english_filler(words):
    if words <= 0:
        return ""

    vocabulary = cycle(" ".join(FILLER_EN).split())
    chosen = [next(vocabulary) for _ in range(words)]
    if not chosen[-1].endswith("."):
        chosen[-1] += "."

    paragraphs = [
        " ".join(chosen[start : start + PARAGRAPH_WORDS])
        for start in range(0, len(chosen), PARAGRAPH_WORDS)
    ]
    return "\n\n".join(paragraphs)


def _chinese_filler(chars):
    if chars <= 0:
        return ""

    sentences = cycle(FILLER_ZH)
    text = ""
    while len(text) < chars:
        text += next(sentences)
    text = text[:chars].rstrip("，。") + "。"

    paragraphs = [
        text[start : start + PARAGRAPH_CJK_CHARS]
        for start in range(0, len(text), PARAGRAPH_CJK_CHARS)
    ]
    return "\n\n".join(paragraphs)


TITLE_REQUEST_HEADING = "Conversation to title:"
TITLE_WORDS = 6


def build_title(question):
    """A title for a titling request (chat.titling), or None for any other.

    The first words of the conversation's question, as a real model's short
    title would be: a few words, no decoration.
    """
    if not question.startswith(TITLE_REQUEST_HEADING):
        return None
    asked = question.split("Question:", 1)[-1].split("Answer:", 1)[0]
    asked = re.sub(r"\[\[sim[^\]]*\]\]", "", asked).strip()
    if has_cjk(asked):
        return asked[:12].rstrip("？?。，, ")
    return " ".join(asked.split()[:TITLE_WORDS]).rstrip("?.,")
