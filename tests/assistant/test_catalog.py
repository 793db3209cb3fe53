import pytest

from assistant.catalog import _profiles_for
from assistant.models import ModelProfile

pytestmark = pytest.mark.django_db


def test_it_guesses_reasoning_profiles_from_the_model_id():
    r1 = ModelProfile.defaults_for("deepseek-r1:671b")
    v3 = ModelProfile.defaults_for("deepseek-v3")

    assert r1["is_reasoning"] and r1["context_window"] == 16384
    assert r1["input_limit"] == 6144
    assert not v3["is_reasoning"]


def test_it_trusts_the_context_a_server_reports():
    vllm = {"id": "deepseek-r1", "max_model_len": 8192}
    llama_cpp = {"id": "qwen2.5-0.5b.gguf", "meta": {"n_ctx": 2048}}

    profiles = {p.name: p for p in _profiles_for([vllm, llama_cpp])}

    assert profiles["deepseek-r1"].context_window == 8192
    assert profiles["deepseek-r1"].input_limit == 4096
    assert profiles["qwen2.5-0.5b.gguf"].context_window == 2048
    assert profiles["qwen2.5-0.5b.gguf"].max_output_tokens == 1024


def test_it_keeps_what_an_administrator_set():
    ModelProfile.objects.create(
        name="deepseek-r1",
        context_window=32768,
        input_limit=16000,
        max_output_tokens=8000,
        is_reasoning=True,
    )

    (profile,) = _profiles_for([{"id": "deepseek-r1", "max_model_len": 8192}])

    assert profile.context_window == 32768
