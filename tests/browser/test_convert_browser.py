"""The image converter in a real Chromium against the running app."""

import base64
import re

import pytest

from tests.browser.conftest import live_manage, sign_in

pytestmark = pytest.mark.browser

FORMULA_SOURCE = r"\frac{a+b}{2} \geq \sqrt{ab}"

# Builds a File from base64 in the page, as the clipboard or a drag would
# hand one over, and fires the event the way the browser does.
FIRE_WITH_FILE = """([selector, type, data]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], "shot.png", { type: "image/png" }));
  const target = document.querySelector(selector);
  const event = type === "paste"
    ? new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true })
    : new DragEvent(type, { dataTransfer: transfer, bubbles: true, cancelable: true });
  target.dispatchEvent(event);
}"""


def open_converter(page):
    sign_in(page)
    page.click("[data-convert-link]")
    page.wait_for_selector("[data-dropzone]")


def wait_for_result(page):
    page.wait_for_selector("[data-result][data-status=done]")


def image_base64(shared_dir, name):
    path = shared_dir / "img2latex-eval/images" / name
    return base64.b64encode(path.read_bytes()).decode()


def test_it_converts_an_uploaded_formula_copies_and_sends_it_to_chat(
    page, live_app, shared_dir
):
    page.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=live_app
    )
    open_converter(page)

    page.set_input_files(
        "[data-file-input]", str(shared_dir / "img2latex-eval/images/f17.png")
    )

    wait_for_result(page)
    assert page.input_value("[data-source]") == FORMULA_SOURCE
    assert page.locator("[data-preview] .katex").count() == 1
    assert page.locator("[data-render-error]").is_hidden()
    assert page.locator("[data-original]").evaluate("img => img.naturalWidth") == 251
    assert page.locator("[data-history] [data-conversion-id]").count() == 1
    assert "qwen2.5-vl-sim" in page.inner_text("[data-answered-by]")
    assert page.locator("[data-low-confidence]").is_hidden()

    page.click("[data-copy]")
    page.wait_for_function("() => navigator.clipboard.readText().then(Boolean)")
    assert page.evaluate("navigator.clipboard.readText()") == FORMULA_SOURCE

    page.click("[data-copy-mathml]")
    page.wait_for_timeout(200)
    assert page.evaluate("navigator.clipboard.readText()").startswith("<math")

    page.click("[data-send-to-chat]")
    page.wait_for_selector("[data-composer-text]")
    assert page.input_value("[data-composer-text]") == FORMULA_SOURCE

    page.goto("/convert/")
    page.locator("[data-history] [data-conversion-id]").first.click()
    wait_for_result(page)
    page.click("[data-send-to-polish]")
    page.wait_for_selector("textarea[name=text]")
    assert page.input_value("textarea[name=text]") == FORMULA_SOURCE


def test_it_converts_a_pasted_table_and_a_dropped_formula(page, shared_dir):
    open_converter(page)
    page.check("input[name=kind][value=table]")
    page.check("input[name=target][value=html]")

    page.evaluate(
        FIRE_WITH_FILE, ["body", "paste", image_base64(shared_dir, "t01.png")]
    )

    wait_for_result(page)
    assert page.input_value("[data-source]").startswith("<table>")
    assert page.locator("[data-preview] table td[colspan='2']").count() == 1
    assert page.locator("[data-preview] table th").count() == 3

    page.check("input[name=target][value=markdown]")
    page.click("[data-convert-again]")
    page.wait_for_function(
        "() => document.querySelector('[data-source]').value.startsWith('|')"
    )
    wait_for_result(page)
    assert page.locator("[data-preview] table th").count() == 3

    page.check("input[name=kind][value=formula]")
    assert page.locator("input[name=target][value=html]").is_disabled()
    page.select_option("[data-wrapper]", "inline")
    page.evaluate(
        FIRE_WITH_FILE, ["[data-dropzone]", "drop", image_base64(shared_dir, "f01.png")]
    )

    page.wait_for_function(
        "() => document.querySelector('[data-source]').value.startsWith('$')"
    )
    wait_for_result(page)
    assert page.input_value("[data-source]") == f"${FORMULA_SOURCE}$"
    assert page.locator("[data-history] [data-conversion-id]").count() >= 2


def test_it_explains_why_a_file_cannot_be_converted(page, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is a text file with the wrong name")
    open_converter(page)

    page.set_input_files("[data-file-input]", str(not_an_image))

    error = page.locator("[data-error]")
    error.wait_for(state="visible")
    assert re.search("不是转换器能读取的图片", error.inner_text())
    assert page.locator("[data-result]").is_hidden()


def test_it_flags_a_formula_katex_cannot_render(page, live_app, shared_dir):
    """A broken formula stays visible as source, with KaTeX's complaint."""
    png = (shared_dir / "img2latex-eval/images/f01.png").read_bytes()
    live_manage(
        live_app,
        "shell",
        "-c",
        "from django.contrib.auth.models import User;"
        "from academic.models import Conversion;"
        "Conversion.objects.create(owner=User.objects.get(username='demo'),"
        " kind='formula', target='latex', image=bytes.fromhex("
        f"'{png.hex()}'), image_width=196, image_height=51,"
        " model='qwen2.5-vl-sim', status='done', source=r'\\frac{a}{')",
    )
    open_converter(page)

    page.locator("[data-history] [data-conversion-id]").first.click()

    flag = page.locator("[data-render-error]")
    flag.wait_for(state="visible")
    assert "KaTeX" in flag.inner_text()
    assert page.input_value("[data-source]") == "\\frac{a}{"
    assert page.locator("[data-preview]").inner_text() == "\\frac{a}{"
    assert page.locator("[data-preview] .katex").count() == 0
