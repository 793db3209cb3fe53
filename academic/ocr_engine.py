"""Read a formula from a picture with the optional offline network.

The network is the one in the PyPI package latex-ocr-junia 0.1.3 (PyTorch,
CPU): a small vision transformer that writes LaTeX one character at a time,
with its weights inside the wheel, so nothing is fetched at run time. It is
an extra (requirements-ocr.txt), not a default requirement; the README says
why. Without it installed, is_available() is False and the converter uses
the vision model alone.

What it reads well: plain inline and display formulas in LaTeX's default
font. What it reads badly: structured formulas (matrices, cases), tables
(not offered to it here), and other fonts (STIX, DejaVu: none right). So
every reading says how sure it is, and a doubtful one goes to the vision
model when one is configured (academic.tasks).

The model is loaded once per worker process, on first use, under a lock,
and shared by that process's threads: inference only reads the weights.
Decoding is greedy, one position per step (IncrementalDecoder), and
bounded: at most MAX_OUTPUT_TOKENS characters, at most TIME_LIMIT_SECONDS,
and a tail that repeats itself (the network's usual way of failing) ends
it early. A reading cut short by any of these
is kept but marked doubtful.
"""

import importlib.util
import io
import logging
import math
import re
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from PIL import Image

from academic.img2tex import strip_math_delimiters

logger = logging.getLogger(__name__)

PACKAGE = "latex_ocr_junia"
# The name usage records and the admission pool know this engine by.
MODEL_NAME = "latex-ocr-junia-0.1.3"

# The set's longest plain formula is under 100 characters and its longest
# structured one about 300; 400 leaves room without letting a loop run on.
MAX_OUTPUT_TOKENS = 400
# The package's own greedy decoding took about 1.6 s per plain formula on
# one idle core, IncrementalDecoder takes less; a reading still going at
# 15 s is a loop or a formula this network misreads.
TIME_LIMIT_SECONDS = 15.0

# A tail of at least REPEAT_MIN_SPAN characters made of one unit of at most
# REPEAT_MAX_UNIT characters, repeated at least REPEAT_MIN_COUNT times, is
# a decoding loop. Real formulas repeat short pieces ("} & 0 & 0"), but
# rarely 48 characters of the same one; a zero matrix that does is marked
# doubtful, which costs a second opinion, not a wrong answer.
REPEAT_MIN_SPAN = 48
REPEAT_MAX_UNIT = 24
REPEAT_MIN_COUNT = 4
# The probability the network gives its least sure character separates
# right from wrong readings only roughly: on the shared evaluation set,
# below 0.4 were 3 of 24 right readings and 4 of 8 wrong ones not already
# doubtful for another reason. A threshold from 43 images, not a
# calibrated one.
MIN_TOKEN_PROBABILITY = 0.4
# Structured formulas (aligned lines, matrices, cases) it reads right about
# 1 time in 10, however sure it is: on the shared set its wrong readings of
# them had least sure characters above 0.5. So a reading with an
# environment, a line break or a column separator is doubtful as such.
_STRUCTURE = re.compile(r"&|\\\\|\\begin\{")

# The network was trained on sources wrapped as written in papers; a
# single-line align* is only a wrapper, like \\[ ... \\].
_SINGLE_LINE_ALIGN = re.compile(
    r"\A\\begin\{align\*?\}(?P<body>(?:(?!&|\\\\).)*)\\end\{align\*?\}\Z",
    re.DOTALL,
)

# Why a reading is doubtful; "" when it is not.
TIMEOUT = "timeout"
LENGTH = "length"
REPETITION = "repetition"
STRUCTURED = "structured"
UNSURE = "unsure"
EMPTY = "empty"


@dataclass(frozen=True)
class OfflineReading:
    source: str
    # Characters written, the end marker not counted.
    tokens: int
    seconds: float
    # The probability the network gave its least sure character (1.0 for
    # an empty reading).
    min_probability: float
    doubt: str

    @property
    def doubtful(self):
        return bool(self.doubt)


def is_available():
    """True when the extra (torch and latex-ocr-junia) is installed."""
    return (
        importlib.util.find_spec("torch") is not None
        and importlib.util.find_spec(PACKAGE) is not None
    )


def enabled():
    """True when formulas go to this engine first (IMG2TEX_ENGINE)."""
    return settings.IMG2TEX_ENGINE in ("auto", "offline") and is_available()


def clean_source(text):
    """The formula without the delimiters the network wrote around it."""
    text = text.strip()
    match = _SINGLE_LINE_ALIGN.match(text)
    if match:
        text = match.group("body").strip()
    return strip_math_delimiters(text)


class _LoadedModel:
    def __init__(self, network, tokenizer, config, seconds):
        self.network = network
        self.tokenizer = tokenizer
        self.config = config
        self.load_seconds = seconds


_loaded = None
_load_lock = threading.Lock()


def load(threads=1):
    """The network, loaded on first call and reused by every later one.

    `threads` is torch's intra-op thread count, set for the whole process
    at the first load: on a shared CPU one thread per reading, with the
    admission pool bounding how many run at once, beats many threads
    fighting over few cores.
    """
    global _loaded
    if _loaded is not None:
        return _loaded

    with _load_lock:
        if _loaded is None:
            _loaded = _load(threads)
    return _loaded


def _load(threads):
    started = time.perf_counter()
    import torch
    from latex_ocr_junia.model import build_model
    from latex_ocr_junia.predict import ASSETS_DIR
    from latex_ocr_junia.tokenizer import LatexTokenizer
    from latex_ocr_junia.utils import load_model_config

    torch.set_num_threads(threads)
    tokenizer = LatexTokenizer.load(ASSETS_DIR / "tokenizer.json")
    config = load_model_config(ASSETS_DIR / "model_config.json")
    network = build_model(config)
    # weights_only: the checkpoint is a plain state dict, and a pickle that
    # is anything else must not run code on load.
    checkpoint = torch.load(
        ASSETS_DIR / "best.pt", map_location="cpu", weights_only=True
    )
    network.load_state_dict(checkpoint.get("model_state_dict", checkpoint))
    network.eval()

    seconds = time.perf_counter() - started
    logger.info("offline formula engine %s loaded in %.1f s", MODEL_NAME, seconds)
    return _LoadedModel(network, tokenizer, config, seconds)


def read_formula(
    png,
    max_tokens=MAX_OUTPUT_TOKENS,
    time_limit=TIME_LIMIT_SECONDS,
    threads=1,
):
    """The LaTeX the network reads from a normalised PNG, as an OfflineReading.

    The PNG is what academic.imaging.normalise made: its steps (inverting a
    dark background, compositing transparency, scaling up a tiny crop) have
    run where their triggers were met, which this network needs more than
    a vision model does, and a clean image reaches it unchanged.
    """
    import torch

    model = load(threads)
    started = time.monotonic()
    pixels = _pixels(png, model.config)

    with torch.inference_mode():
        written, probabilities, stop = _decode(
            model, pixels, max_tokens, started + time_limit
        )

    source = clean_source(model.tokenizer.decode(written))
    seconds = time.monotonic() - started
    least_sure = min(probabilities, default=1.0)
    doubt = _doubt(source, stop, least_sure)
    if doubt:
        logger.info(
            "offline reading doubtful (%s) after %d characters, %.1f s",
            doubt,
            len(written),
            seconds,
        )
    return OfflineReading(source, len(written), seconds, least_sure, doubt)


def _pixels(png, config):
    """The image as the network was trained on it: grey, fitted into its
    input size without distortion, padded with black, values 0 to 1.

    This is the package's own load_and_preprocess_image, on bytes rather
    than a file path.
    """
    import numpy
    import torch

    image = Image.open(io.BytesIO(png)).convert("L")
    width, height = image.size
    scale = min(config.image_width / width, config.image_height / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)

    canvas = Image.new("L", (config.image_width, config.image_height), 0)
    offset = ((config.image_width - size[0]) // 2, (config.image_height - size[1]) // 2)
    canvas.paste(image, offset)
    array = numpy.asarray(canvas, dtype=numpy.float32) / 255.0
    return torch.from_numpy(array)[None, None, :, :]


def _decode(model, pixels, max_tokens, deadline):
    """Greedy decoding: (characters' ids, their probabilities, why it stopped).

    Stops at the end marker (""), at max_tokens (LENGTH), at the deadline
    (TIMEOUT) or on a repeating tail (REPETITION). The deadline is checked
    before each character, so a reading overruns it by one step at most.
    """
    import torch

    tokenizer = model.tokenizer
    never = [tokenizer.pad_id, tokenizer.bos_id]
    decoder = IncrementalDecoder(model.network, model.network.encode(pixels))
    token = tokenizer.bos_id
    written = []
    probabilities = []

    while len(written) < max_tokens:
        if time.monotonic() > deadline:
            return written, probabilities, TIMEOUT

        logits = decoder.step(token)
        logits[never] = -math.inf
        chances = torch.softmax(logits, dim=-1)
        token = int(torch.argmax(chances))
        if token == tokenizer.eos_id:
            return written, probabilities, ""

        written.append(token)
        probabilities.append(float(chances[token]))
        if repeating_tail(written):
            return written, probabilities, REPETITION

    return written, probabilities, LENGTH


class IncrementalDecoder:
    """The package's decoder, one character at a time, with its keys and
    values kept between steps.

    The package's own generate() runs the whole decoder over the whole
    sequence for every character, and projects the image's 1,024 patches
    into keys and values again in every layer at every step; on a shared
    CPU that took 15 s for 30 characters. Here the patches are projected
    once per layer, and each step runs only the new position through the
    layers, attending to the keys and values kept from earlier positions.
    The decoder is causal and dropout is off in eval mode, so the logits
    are those of the full computation (tests/academic/test_ocr_engine.py
    compares the two).
    """

    def __init__(self, network, memory):
        self.network = network
        self.position = 0
        self.blocks = []
        for block in network.decoder_blocks:
            cross = block.cross_attn
            keys, values = (
                self._project(cross, memory, 1),
                self._project(cross, memory, 2),
            )
            self.blocks.append({"cross": (keys, values), "keys": [], "values": []})

    def step(self, token):
        """The logits for the character after `token`."""
        import torch

        embed = self.network.decoder_embed
        ids = torch.tensor([[token]])
        position = torch.tensor([self.position])
        x = embed.token_emb(ids) + embed.pos_emb(position)[None, :, :]
        x = embed.norm(x)
        self.position += 1

        for block, kept in zip(self.network.decoder_blocks, self.blocks, strict=True):
            x = x + self._self_attention(block, kept, block.self_norm(x))
            x = x + self._attend(block.cross_attn, block.cross_norm(x), *kept["cross"])
            x = x + block.ffn(block.ffn_norm(x))
        x = self.network.decoder_norm(x)
        return self.network.lm_head(x)[0, -1].float()

    def _self_attention(self, block, kept, normed):
        import torch

        attention = block.self_attn
        kept["keys"].append(self._project(attention, normed, 1))
        kept["values"].append(self._project(attention, normed, 2))
        keys = torch.cat(kept["keys"], dim=2)
        values = torch.cat(kept["values"], dim=2)
        return self._attend(attention, normed, keys, values)

    @staticmethod
    def _project(attention, x, which):
        """Query (0), keys (1) or values (2) of `x`, split into heads."""
        import torch.nn.functional as F

        size = attention.embed_dim
        weight = attention.in_proj_weight[which * size : (which + 1) * size]
        bias = attention.in_proj_bias[which * size : (which + 1) * size]
        projected = F.linear(x, weight, bias)
        batch, length, _ = projected.shape
        heads = attention.num_heads
        return projected.view(batch, length, heads, size // heads).transpose(1, 2)

    def _attend(self, attention, x, keys, values):
        import torch.nn.functional as F

        query = self._project(attention, x, 0)
        mixed = F.scaled_dot_product_attention(query, keys, values)
        batch, _, length, _ = mixed.shape
        mixed = mixed.transpose(1, 2).reshape(batch, length, attention.embed_dim)
        return attention.out_proj(mixed)


def repeating_tail(tokens):
    """True when the sequence ends in one short unit repeated many times."""
    for unit in range(1, REPEAT_MAX_UNIT + 1):
        count = max(REPEAT_MIN_COUNT, math.ceil(REPEAT_MIN_SPAN / unit))
        span = unit * count
        if len(tokens) < span:
            continue
        tail = tokens[-span:]
        if tail == tail[:unit] * count:
            return True
    return False


def _doubt(source, stop, least_sure):
    if stop:
        return stop
    if not source:
        return EMPTY
    if _STRUCTURE.search(source):
        return STRUCTURED
    if least_sure < MIN_TOKEN_PROBABILITY:
        return UNSURE
    return ""
