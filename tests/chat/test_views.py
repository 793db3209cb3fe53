import json

import pytest
from django.urls import reverse

from assistant.models import ModelProfile
from tests.factories import add_exchange, make_conversation, make_user

pytestmark = pytest.mark.django_db


def page_data(response):
    html = response.content.decode()
    start = html.index('<script id="page-data" type="application/json">')
    start = html.index(">", start) + 1
    end = html.index("</script>", start)
    return json.loads(html[start:end])


def test_it_sends_anonymous_visitors_to_sign_in(client):
    response = client.get(reverse("chat-home"))

    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


def test_it_speaks_chinese_by_default_and_english_on_request(client):
    chinese = client.get(reverse("login"))
    client.post(reverse("set_language"), {"language": "en", "next": "/"})
    english = client.get(reverse("login"))

    assert "登录" in chinese.content.decode()
    assert "Sign in" in english.content.decode()


def test_it_lists_the_models_the_api_serves_with_their_profiles(client, model_api):
    user = make_user()
    client.force_login(user)

    response = client.get(reverse("chat-home"))

    assert response.status_code == 200
    served = {
        "deepseek-r1",
        "deepseek-r1-vllm",
        "deepseek-r1-tags",
        "deepseek-r1-prefilled",
        "deepseek-v3",
        "qwen2.5-vl-sim",
    }
    assert set(ModelProfile.objects.values_list("name", flat=True)) == served
    r1 = ModelProfile.objects.get(name="deepseek-r1")
    assert r1.is_reasoning and r1.context_window == 16384 and r1.input_limit == 6144
    assert not ModelProfile.objects.get(name="deepseek-v3").is_reasoning
    vision = ModelProfile.objects.filter(supports_vision=True)
    assert list(vision.values_list("name", flat=True)) == ["qwen2.5-vl-sim"]
    for name in served:
        assert f'value="{name}"' in response.content.decode()


def test_it_still_opens_the_page_when_the_api_is_down(client, settings, model_api):
    ModelProfile.ensure("deepseek-r1")
    settings.MODEL_API_BASE_URL = "http://127.0.0.1:9/v1"
    client.force_login(make_user())

    response = client.get(reverse("chat-home"))

    assert response.status_code == 200
    assert 'value="deepseek-r1"' in response.content.decode()


def test_it_shows_a_conversation_with_reasoning_and_rendered_answer(client, model_api):
    user = make_user()
    conversation = make_conversation(user)
    add_exchange(
        conversation, "What is $x$?", "It is $x^2$ <script>x</script>", "Let me see"
    )
    client.force_login(user)

    response = client.get(conversation.get_absolute_url())

    messages = page_data(response)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["reasoning"] == "Let me see"
    assert '<span class="math-inline">x^2</span>' in messages[1]["html"]
    assert "<script>" not in messages[1]["html"]
    assert "<script>x" not in response.content.decode()


def test_it_hides_other_users_conversations(client, model_api):
    owner = make_user("owner")
    conversation = make_conversation(owner)
    client.force_login(make_user("outsider"))

    response = client.get(conversation.get_absolute_url())
    home = client.get(reverse("chat-home"))

    assert response.status_code == 404
    assert conversation.get_absolute_url() not in home.content.decode()


def test_it_lists_a_users_conversations_in_a_fixed_number_of_queries(
    client, model_api, django_assert_max_num_queries
):
    user = make_user()
    for index in range(30):
        make_conversation(user).messages.create(role="user", content=f"q{index}")
    conversation = make_conversation(user)
    for index in range(20):
        add_exchange(conversation, f"question {index}", f"answer {index}")
    client.force_login(user)
    client.get(conversation.get_absolute_url())  # profiles created on first view

    # One of them lists the user's presets for the settings panel.
    with django_assert_max_num_queries(9):
        response = client.get(conversation.get_absolute_url())

    assert response.status_code == 200
