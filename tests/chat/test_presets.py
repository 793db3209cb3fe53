"""Conversation settings and presets: what reaches the model, and who may
change them. Replies are written against the simulator over real HTTP, and
the tests read the request body as the simulator received it."""

import json

import openai
import pytest
from django.urls import reverse

from assistant.models import ModelProfile
from chat import exports
from chat.models import Conversation, Message, Preset
from chat.tasks import generate_reply
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db

Switch = ModelProfile.ThinkingSwitch
JSON = {"HTTP_ACCEPT": "application/json"}


def last_request(simulator):
    return simulator.stats["recent_requests"][-1]


def write_reply(conversation, question="Why is the sky blue?"):
    _, reply = queue_reply(conversation, question)
    generate_reply(reply.pk)
    reply.refresh_from_db()
    return reply


def set_switch(model, switch):
    profile = ModelProfile.ensure(model)
    profile.thinking_switch = switch
    profile.save(update_fields=["thinking_switch"])
    return profile


@pytest.fixture
def researcher():
    return make_user()


@pytest.fixture
def outsider():
    return make_user("outsider")


# ------------------------------------------------------ what reaches the model


def test_it_merges_the_instructions_into_the_one_system_message(
    settings, model_api, researcher
):
    settings.CHAT_SYSTEM_PROMPT = "You are a careful research assistant."
    conversation = make_conversation(researcher)
    conversation.preset_prompt = "Answer as a peer reviewer."
    conversation.save()

    write_reply(conversation)

    sent = last_request(model_api)["messages"]
    systems = [m for m in sent if m["role"] == "system"]
    assert len(systems) == 1 and sent[0] is systems[0]
    assert systems[0]["content"] == (
        "You are a careful research assistant.\n\nAnswer as a peer reviewer."
    )


def test_it_sends_the_instructions_alone_when_the_deployment_has_none(
    settings, model_api, researcher
):
    settings.CHAT_SYSTEM_PROMPT = ""
    conversation = make_conversation(researcher)
    write_reply(conversation)
    assert last_request(model_api)["messages"][0]["role"] == "user"

    conversation.preset_prompt = "Explain like a textbook."
    conversation.save()
    write_reply(conversation, "And why are sunsets red?")

    sent = last_request(model_api)["messages"]
    assert sent[0] == {"role": "system", "content": "Explain like a textbook."}
    assert [m["role"] for m in sent].count("system") == 1


def test_it_sends_the_temperature_and_the_output_limit(model_api, researcher):
    conversation = make_conversation(researcher, model="deepseek-v3")
    conversation.temperature = 0.2
    conversation.max_output_tokens = 300
    conversation.save()

    reply = write_reply(conversation)

    body = last_request(model_api)
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 300
    assert reply.max_tokens == 300
    assert reply.status == Message.Status.STOP


def test_it_sends_no_temperature_when_none_is_set(model_api, researcher):
    write_reply(make_conversation(researcher, model="deepseek-v3"))

    assert "temperature" not in last_request(model_api)


def test_it_keeps_the_output_limit_within_the_profile_cap(model_api, researcher):
    profile = ModelProfile.ensure("deepseek-v3")
    profile.max_output_tokens = 500
    profile.save(update_fields=["max_output_tokens"])
    conversation = make_conversation(researcher, model="deepseek-v3")
    # Set directly, as an import or a later lower cap could leave it.
    conversation.max_output_tokens = 5000
    conversation.save()

    reply = write_reply(conversation)

    assert last_request(model_api)["max_tokens"] == 500
    assert reply.max_tokens == 500


def test_it_switches_thinking_off_through_the_chat_template(model_api, researcher):
    set_switch("deepseek-r1-vllm", Switch.CHAT_TEMPLATE_KWARGS)
    conversation = make_conversation(researcher, model="deepseek-r1-vllm")
    conversation.thinking = False
    conversation.save()

    reply = write_reply(conversation)

    body = last_request(model_api)
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert "reasoning_effort" not in body
    assert reply.status == Message.Status.STOP
    assert reply.reasoning == "" and "sky blue" in reply.content


def test_it_asks_for_thinking_through_the_chat_template_when_on(model_api, researcher):
    set_switch("deepseek-r1-vllm", Switch.CHAT_TEMPLATE_KWARGS)
    conversation = make_conversation(researcher, model="deepseek-r1-vllm")

    reply = write_reply(conversation)

    assert last_request(model_api)["chat_template_kwargs"] == {"enable_thinking": True}
    assert "sky blue" in reply.reasoning


def test_it_switches_thinking_off_with_reasoning_effort_none(model_api, researcher):
    set_switch("deepseek-r1", Switch.REASONING_EFFORT)
    conversation = make_conversation(researcher, model="deepseek-r1")
    conversation.thinking = False
    conversation.save()

    reply = write_reply(conversation)

    assert last_request(model_api)["reasoning_effort"] == "none"
    assert reply.reasoning == "" and reply.content


def test_it_reads_the_answer_of_a_prefilled_template_with_thinking_off(
    model_api, researcher
):
    """A template that opens <think> writes an empty block when thinking is
    off, so the stream starts in the answer, not in the reasoning."""
    profile = set_switch("deepseek-r1-prefilled", Switch.CHAT_TEMPLATE_KWARGS)
    profile.starts_in_reasoning = True
    profile.save(update_fields=["starts_in_reasoning"])
    conversation = make_conversation(researcher, model="deepseek-r1-prefilled")
    conversation.thinking = False
    conversation.save()

    reply = write_reply(conversation)

    assert reply.status == Message.Status.STOP
    assert reply.reasoning == ""
    assert "sky blue" in reply.content and "```python" in reply.content


def test_it_sends_no_switch_to_a_model_that_cannot_switch(model_api, researcher):
    conversation = make_conversation(researcher, model="deepseek-r1")
    conversation.thinking = False
    conversation.save()

    reply = write_reply(conversation)

    body = last_request(model_api)
    assert "reasoning_effort" not in body and "chat_template_kwargs" not in body
    # The model thinks anyway, and the reply shows it.
    assert "sky blue" in reply.reasoning


@pytest.mark.parametrize(
    "switch, thinking, params",
    [
        (Switch.NONE, False, {}),
        (Switch.REASONING_EFFORT, True, {}),
        (Switch.REASONING_EFFORT, False, {"extra_body": {"reasoning_effort": "none"}}),
        (
            Switch.CHAT_TEMPLATE_KWARGS,
            False,
            {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}},
        ),
    ],
)
def test_each_switch_sends_its_own_parameter(switch, thinking, params):
    profile = ModelProfile(name="m", thinking_switch=switch)

    assert profile.thinking_params(thinking) == params


def test_the_simulator_refuses_what_the_servers_refuse(model_api):
    client = openai.OpenAI(base_url=model_api.url, api_key="x", max_retries=0)
    ask = {
        "model": "deepseek-r1",
        "messages": [{"role": "user", "content": "hi"}],
    }

    with pytest.raises(openai.BadRequestError, match="invalid reasoning value"):
        client.chat.completions.create(**ask, extra_body={"reasoning_effort": "off"})
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(**ask, temperature=3)
    # A field it does not know is ignored, as vLLM ignores it.
    answer = client.chat.completions.create(**ask, extra_body={"top_k": 20})
    assert answer.choices[0].message.content


# --------------------------------------------------------- the settings view


def settings_url(conversation):
    return reverse("chat-settings", args=[conversation.pk])


def test_it_saves_the_settings_for_the_next_reply(client, model_api, researcher):
    conversation = make_conversation(researcher, model="deepseek-v3")
    client.force_login(researcher)

    response = client.post(
        settings_url(conversation),
        {"prompt": "  Be brief.  ", "temperature": "0.7", "max_output_tokens": "800"},
        **JSON,
    )

    assert response.status_code == 200
    assert response.json()["settings"] == {
        "prompt": "Be brief.",
        "temperature": 0.7,
        "max_output_tokens": 800,
        # An unticked box is not posted: thinking off.
        "thinking": False,
    }
    conversation.refresh_from_db()
    assert conversation.preset_prompt == "Be brief."
    assert conversation.temperature == 0.7
    assert conversation.max_output_tokens == 800

    write_reply(conversation)
    body = last_request(model_api)
    assert body["temperature"] == 0.7 and body["max_tokens"] == 800
    assert body["messages"][0]["content"].endswith("Be brief.")


@pytest.mark.parametrize(
    "posted, expected",
    [
        ({"temperature": "3"}, "less than or equal to 2"),
        ({"temperature": "-1"}, "greater than or equal to 0"),
        ({"temperature": "warm"}, "Enter a number"),
        ({"max_output_tokens": "0"}, "greater than or equal to 1"),
        ({"max_output_tokens": "4097"}, "at most 4096 tokens per reply"),
        ({"prompt": "x" * 4001}, "at most 4000 characters"),
    ],
)
def test_it_explains_a_setting_out_of_bounds_and_keeps_the_old_ones(
    client, model_api, researcher, posted, expected
):
    conversation = make_conversation(researcher, model="deepseek-v3")
    conversation.temperature = 0.5
    conversation.save()
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    client.force_login(researcher)

    response = client.post(settings_url(conversation), posted, **JSON)

    assert response.status_code == 400
    assert expected in response.json()["message"]
    conversation.refresh_from_db()
    assert conversation.temperature == 0.5


def test_it_explains_the_output_cap_in_chinese_by_default(
    client, model_api, researcher
):
    conversation = make_conversation(researcher, model="deepseek-v3")
    client.force_login(researcher)

    response = client.post(
        settings_url(conversation), {"max_output_tokens": "99999"}, **JSON
    )

    message = response.json()["message"]
    assert "4096" in message and "输出上限" in message


def test_it_saves_without_the_script_and_comes_back_with_a_message(
    client, model_api, researcher
):
    conversation = make_conversation(researcher)
    client.force_login(researcher)

    response = client.post(
        settings_url(conversation), {"prompt": "Cite sources.", "thinking": "on"}
    )

    assert response.status_code == 302
    assert response.url == conversation.get_absolute_url()
    conversation.refresh_from_db()
    assert conversation.preset_prompt == "Cite sources." and conversation.thinking


def test_it_applies_a_built_in_preset(client, model_api, researcher):
    conversation = make_conversation(researcher)
    client.force_login(researcher)

    response = client.post(
        settings_url(conversation), {"preset": "builtin:reviewer"}, **JSON
    )

    assert response.status_code == 200
    conversation.refresh_from_db()
    # In the reader's language: Chinese unless they chose English.
    assert "同行评审" in conversation.preset_prompt
    assert conversation.temperature == 0.3


def test_it_applies_a_saved_preset_as_a_copy(client, model_api, researcher):
    preset = Preset.objects.create(
        user=researcher, name="terse", prompt="One paragraph.", temperature=0.1
    )
    conversation = make_conversation(researcher)
    client.force_login(researcher)

    client.post(settings_url(conversation), {"preset": str(preset.pk)}, **JSON)
    preset.prompt = "Changed later."
    preset.save()

    conversation.refresh_from_db()
    assert conversation.preset_prompt == "One paragraph."
    assert conversation.temperature == 0.1


def test_it_keeps_an_applied_presets_limit_within_the_models_cap(
    client, model_api, researcher
):
    preset = Preset.objects.create(user=researcher, name="long", max_output_tokens=9000)
    conversation = make_conversation(researcher, model="deepseek-v3")
    client.force_login(researcher)

    client.post(settings_url(conversation), {"preset": str(preset.pk)}, **JSON)

    conversation.refresh_from_db()
    assert conversation.max_output_tokens == 4096


def test_nobody_can_change_another_users_conversation_settings(
    client, model_api, researcher, outsider
):
    conversation = make_conversation(researcher)
    client.force_login(outsider)

    response = client.post(settings_url(conversation), {"prompt": "Leak it."})

    assert response.status_code == 404
    conversation.refresh_from_db()
    assert conversation.preset_prompt == ""


def test_nobody_can_apply_another_users_preset(client, model_api, researcher, outsider):
    theirs = Preset.objects.create(user=researcher, name="secret", prompt="Secret.")
    conversation = make_conversation(outsider)
    client.force_login(outsider)

    response = client.post(
        settings_url(conversation), {"preset": str(theirs.pk)}, **JSON
    )

    assert response.status_code == 404
    conversation.refresh_from_db()
    assert conversation.preset_prompt == ""


def test_the_settings_view_takes_only_posts(client, researcher):
    conversation = make_conversation(researcher)
    client.force_login(researcher)

    assert client.get(settings_url(conversation)).status_code == 405


# ------------------------------------------------------------- saved presets


def test_it_saves_renames_and_deletes_a_preset(client, researcher):
    client.force_login(researcher)

    created = client.post(
        reverse("chat-preset-create"),
        {"name": " My   reviewer ", "prompt": "Be harsh.", "thinking": "on"},
        **JSON,
    )
    assert created.status_code == 200
    preset = Preset.objects.get(user=researcher)
    assert preset.name == "My reviewer" and preset.thinking
    assert created.json()["preset"]["ref"] == str(preset.pk)

    client.post(reverse("chat-preset-rename", args=[preset.pk]), {"name": "Harsh"})
    preset.refresh_from_db()
    assert preset.name == "Harsh"

    listing = client.get(reverse("chat-presets")).content.decode()
    assert "Harsh" in listing and "Be harsh." in listing

    client.post(reverse("chat-preset-delete", args=[preset.pk]))
    assert not Preset.objects.filter(pk=preset.pk).exists()


def test_it_refuses_a_second_preset_of_the_same_name(client, researcher):
    Preset.objects.create(user=researcher, name="Harsh")
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    client.force_login(researcher)

    response = client.post(
        reverse("chat-preset-create"), {"name": "Harsh", "prompt": "x"}, **JSON
    )

    assert response.status_code == 400
    assert "already have a preset called “Harsh”" in response.json()["message"]
    assert Preset.objects.filter(user=researcher).count() == 1


def test_nobody_can_see_rename_or_delete_another_users_preset(
    client, researcher, outsider
):
    theirs = Preset.objects.create(user=researcher, name="mine", prompt="Private.")
    client.force_login(outsider)

    listing = client.get(reverse("chat-presets")).content.decode()
    home = client.get(reverse("chat-home"))
    renamed = client.post(
        reverse("chat-preset-rename", args=[theirs.pk]), {"name": "taken"}
    )
    deleted = client.post(reverse("chat-preset-delete", args=[theirs.pk]))

    assert "Private." not in listing
    assert "Private." not in home.content.decode()
    assert renamed.status_code == 404 and deleted.status_code == 404
    theirs.refresh_from_db()
    assert theirs.name == "mine"


def test_a_new_conversation_starts_from_a_preset(researcher):
    from django.utils import translation

    from chat import actions, presets

    preset = presets.find_preset(researcher, "builtin:textbook")
    with translation.override("en"):
        conversation = actions.start_conversation(
            researcher, "deepseek-r1", "What is entropy?", preset
        )

    conversation.refresh_from_db()
    assert "textbook" in conversation.preset_prompt
    assert conversation.temperature == 0.5


def test_find_preset_gives_nothing_of_another_user(researcher, outsider):
    from chat.presets import find_preset

    theirs = Preset.objects.create(user=researcher, name="mine")

    assert find_preset(outsider, str(theirs.pk)) is None
    assert find_preset(outsider, "builtin:nonsense") is None
    assert find_preset(outsider, "12abc") is None
    assert find_preset(researcher, str(theirs.pk)) == theirs


def test_the_page_hides_the_thinking_switch_for_a_model_that_cannot_switch(
    client, model_api, researcher
):
    set_switch("deepseek-r1-vllm", Switch.CHAT_TEMPLATE_KWARGS)
    client.force_login(researcher)

    page = client.get(reverse("chat-home"))

    data = page.context["page_data"]["modelSettings"]
    assert data["deepseek-r1-vllm"]["canSwitchThinking"] is True
    assert data["deepseek-r1"]["canSwitchThinking"] is False
    assert data["deepseek-v3"]["outputCap"] == 4096


# ------------------------------------------------------------ export, import


def test_export_and_import_carry_the_settings(client, researcher):
    conversation = make_conversation(researcher)
    conversation.preset_prompt = "Answer as a peer reviewer."
    conversation.temperature = 0.3
    conversation.max_output_tokens = 1200
    conversation.thinking = False
    conversation.save()
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    client.force_login(researcher)

    markdown = client.get(
        reverse("chat-export-markdown", args=[conversation.pk])
    ).content.decode()
    data = json.loads(
        client.get(reverse("chat-export-json", args=[conversation.pk])).content
    )
    items = exports.read_import("c.json", json.dumps(data).encode())
    [copy] = exports.import_conversations(researcher, items)

    assert "```text\nAnswer as a peer reviewer.\n```" in markdown
    assert "temperature 0.3" in markdown and "thinking off" in markdown
    assert data["settings"] == {
        "prompt": "Answer as a peer reviewer.",
        "temperature": 0.3,
        "max_output_tokens": 1200,
        "thinking": False,
    }
    copy.refresh_from_db()
    assert copy.preset_prompt == "Answer as a peer reviewer."
    assert (copy.temperature, copy.max_output_tokens, copy.thinking) == (
        0.3,
        1200,
        False,
    )


def test_import_of_a_file_without_settings_takes_the_defaults(researcher):
    data = {"format": exports.FORMAT_NAME, "version": 1, "messages": []}

    [copy] = exports.import_conversations(
        researcher, exports.read_import("old.json", json.dumps(data).encode())
    )

    assert copy.preset_prompt == "" and copy.temperature is None
    assert copy.thinking is True


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": 9},
        {"temperature": "hot"},
        {"max_output_tokens": -5},
        {"thinking": "yes"},
        {"prompt": 42},
        "not an object",
    ],
)
def test_import_explains_settings_it_cannot_read_and_stores_nothing(researcher, bad):
    data = {
        "format": exports.FORMAT_NAME,
        "version": 1,
        "messages": [],
        "settings": bad,
    }

    with pytest.raises(exports.ImportProblem, match="bad.json"):
        exports.read_import("bad.json", json.dumps(data).encode())
    assert not Conversation.objects.filter(user=researcher).exists()
