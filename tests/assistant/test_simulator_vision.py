"""The simulator answers image requests as a vision model's server would."""

import base64
import io

import openai
import pytest
from PIL import Image, ImageDraw

from assistant.simulator import vision


@pytest.fixture
def client(simulator):
    return openai.OpenAI(base_url=simulator.url, api_key="x", max_retries=0)


def png_bytes(mode="L", image_format="PNG"):
    image = Image.new("L", (120, 40), 255)
    ImageDraw.Draw(image).text((5, 10), "x^2", fill=0)
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, image_format)
    return buffer.getvalue()


def ask(client, url, prompt="Transcribe the formula into LaTeX.", model=None):
    content = [
        {"type": "text", "text": prompt},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return client.chat.completions.create(
        model=model or "qwen2.5-vl-sim",
        messages=[{"role": "user", "content": content}],
        temperature=0,
    )


def data_uri(data, mime="image/png"):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize(
    ("prompt", "start"),
    [
        ("Transcribe the formula into LaTeX.", "```latex\n\\frac"),
        ("Transcribe the table into a LaTeX tabular environment.", "```latex\n\\begin"),
        ("Transcribe the table into a Markdown pipe table.", "```markdown\n|"),
        ("Transcribe the table into an HTML <table>.", "```html\n<table>"),
    ],
)
def test_it_answers_by_the_output_the_prompt_asks_for(client, prompt, start):
    completion = ask(client, data_uri(png_bytes()), prompt)

    assert completion.choices[0].message.content.startswith(start)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/formula.png",
        data_uri(png_bytes(image_format="JPEG", mode="RGB"), "image/jpeg"),
        data_uri(png_bytes()[:-30]),
        data_uri(b"\x89PNG\r\n\x1a\nnot really"),
    ],
    ids=["http", "jpeg", "truncated", "garbage"],
)
def test_it_refuses_an_image_that_is_not_a_decodable_png_data_uri(client, url):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, url)

    assert "Invalid image" in str(caught.value)


def test_it_refuses_images_sent_to_a_model_that_reads_none(client):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, data_uri(png_bytes()), model="deepseek-v3")

    assert "does not accept images" in str(caught.value)


def test_it_decodes_every_png_of_the_shared_set(shared_dir):
    paths = sorted((shared_dir / "img2latex-eval/images").rglob("*.png"))
    assert paths

    for path in paths:
        vision.check_png(path.read_bytes())


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1"])
def test_it_decodes_pngs_of_every_colour_type(mode):
    vision.check_png(png_bytes(mode))
