"""Several model servers at once, each with its own address, key and models."""

import pytest
from django.contrib.admin.sites import site
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

from assistant import backends, catalog, modelapi
from assistant.admission import BATCH
from assistant.completion import complete, pool_name
from assistant.env import env_backends
from assistant.models import Backend, ModelProfile, UsageRecord
from assistant.simulator.server import (
    ServedModel,
    SimulatorConfig,
    SimulatorServer,
)
from chat.models import Message
from chat.tasks import generate_reply
from tests.factories import make_conversation, make_user, queue_reply

pytestmark = pytest.mark.django_db

WORKSTATION_KEY = "ws7-secret-key-0123456789"
WORKSTATION_MODEL = "qwen2.5-32b-workstation"


@pytest.fixture
def workstation():
    """A second server, as a 32B on a workstation's Ollama: its own model and key."""
    server = SimulatorServer(
        host="127.0.0.1",
        port=0,
        config=SimulatorConfig(
            token_delay=0.002,
            first_token_delay=0.02,
            chunk_chars=6,
            api_key=WORKSTATION_KEY,
            models={WORKSTATION_MODEL: ServedModel("tags", 32768)},
        ),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def two_backends(model_api, workstation, settings, monkeypatch):
    settings.MODEL_BACKENDS = {"ws7": workstation.url}
    monkeypatch.setenv("MODEL_BACKEND_WS7_KEY", WORKSTATION_KEY)
    cache.delete(modelapi.MODEL_LIST_CACHE_KEY)
    yield model_api, workstation
    cache.delete(modelapi.MODEL_LIST_CACHE_KEY)


def offered_names():
    return {profile.name for profile in catalog.offered_models()}


def test_models_of_every_backend_are_offered_each_with_its_backend(two_backends):
    names = offered_names()

    assert WORKSTATION_MODEL in names and "deepseek-r1" in names
    workstation_profile = ModelProfile.objects.get(name=WORKSTATION_MODEL)
    assert workstation_profile.backend.name == "ws7"
    assert workstation_profile.context_window <= 32768
    assert ModelProfile.objects.get(name="deepseek-r1").backend is None


def test_the_key_is_read_from_the_environment_and_never_stored(two_backends):
    catalog.offered_models()

    row = Backend.objects.get(name="ws7")
    assert row.api_key_variable == "MODEL_BACKEND_WS7_KEY"
    assert row.from_environment
    stored = " ".join(str(value) for value in Backend.objects.values_list())
    assert WORKSTATION_KEY not in stored
    assert backends.connection_of(row).api_key == WORKSTATION_KEY


def test_a_key_file_works_too(two_backends, monkeypatch, tmp_path):
    secret = tmp_path / "ws7.key"
    secret.write_text(WORKSTATION_KEY + "\n")
    monkeypatch.delenv("MODEL_BACKEND_WS7_KEY")
    monkeypatch.setenv("MODEL_BACKEND_WS7_KEY_FILE", str(secret))

    assert WORKSTATION_MODEL in offered_names()


def test_a_chat_reply_goes_to_the_models_own_server_with_its_key(two_backends):
    default, workstation = two_backends
    catalog.offered_models()
    default_chats = default.stats.get("completed", 0)
    conversation = make_conversation(make_user(), model=WORKSTATION_MODEL)
    _, reply = queue_reply(conversation, "What does a workstation run?")

    generate_reply(reply.pk)

    reply.refresh_from_db()
    assert reply.status == Message.Status.STOP, reply.error_detail
    assert reply.content
    assert workstation.stats_recorder.last_request()["model"] == WORKSTATION_MODEL
    assert default.stats.get("completed", 0) == default_chats


def test_batch_work_goes_to_the_models_server_and_is_metered(two_backends):
    _, workstation = two_backends
    catalog.offered_models()
    user = make_user()
    profile = ModelProfile.objects.get(name=WORKSTATION_MODEL)

    completion = complete(
        profile,
        [{"role": "user", "content": "Polish: the results is good."}],
        200,
        user_id=user.pk,
        kind="polish",
        priority=BATCH,
        stop_key="test:backends:stop",
    )

    assert completion.answer
    assert workstation.stats_recorder.last_request()["model"] == WORKSTATION_MODEL
    record = UsageRecord.objects.get(user=user)
    assert record.model == WORKSTATION_MODEL and record.end_state == "stop"


def test_a_wrong_key_is_an_auth_failure_of_that_backend_only(two_backends, monkeypatch):
    monkeypatch.setenv("MODEL_BACKEND_WS7_KEY", "not-the-key")
    names = offered_names()

    # The workstation refused the listing; the default backend's models stay.
    assert "deepseek-r1" in names and WORKSTATION_MODEL not in names


def test_a_backend_that_is_down_keeps_its_known_models_on_offer(two_backends, settings):
    catalog.offered_models()
    cache.delete(modelapi.MODEL_LIST_CACHE_KEY)
    # Nothing listens on port 9 of loopback.
    settings.MODEL_BACKENDS = {"ws7": "http://127.0.0.1:9/v1"}

    served = modelapi.served_models()
    names = offered_names()

    assert served.unreachable == ["ws7"]
    assert WORKSTATION_MODEL in names and "deepseek-r1" in names


def test_the_same_model_id_on_two_servers_shares_no_admission_slots(
    two_backends, settings
):
    catalog.offered_models()
    profile = ModelProfile.objects.get(name=WORKSTATION_MODEL)

    workstation_pool = pool_name(WORKSTATION_MODEL)
    profile.backend = None
    profile.save(update_fields=["backend"])

    assert workstation_pool != pool_name(WORKSTATION_MODEL)
    assert workstation_pool.startswith(two_backends[1].url.rstrip("/"))


def test_a_backend_switched_off_in_admin_is_neither_listed_nor_called(two_backends):
    catalog.offered_models()
    Backend.objects.filter(name="ws7").update(enabled=False)
    cache.delete(modelapi.MODEL_LIST_CACHE_KEY)

    assert WORKSTATION_MODEL not in offered_names()
    with pytest.raises(ImproperlyConfigured, match="switched off"):
        backends.connection_for_model(WORKSTATION_MODEL)


def test_a_backend_added_in_admin_is_used_with_its_key_variable(
    model_api, workstation, monkeypatch
):
    monkeypatch.setenv("GPU_WS7_TOKEN", WORKSTATION_KEY)
    Backend.objects.create(
        name="ws7-by-hand", base_url=workstation.url, api_key_variable="GPU_WS7_TOKEN"
    )

    assert WORKSTATION_MODEL in offered_names()
    profile = ModelProfile.objects.get(name=WORKSTATION_MODEL)
    assert profile.backend.name == "ws7-by-hand"
    assert not profile.backend.from_environment


def test_a_redeploy_with_a_new_address_rewrites_the_row(two_backends, settings):
    catalog.offered_models()
    settings.MODEL_BACKENDS = {"ws7": "http://127.0.0.1:9/v1"}

    backends.seed_from_environment()

    assert Backend.objects.get(name="ws7").base_url == "http://127.0.0.1:9/v1"


def test_environment_backends_are_read_only_in_admin(two_backends, rf):
    catalog.offered_models()
    admin = site._registry[Backend]
    row = Backend.objects.get(name="ws7")

    assert "base_url" in admin.get_readonly_fields(rf.get("/"), row)
    assert admin.get_readonly_fields(rf.get("/"), None) == []


@pytest.mark.parametrize(
    "value, problem",
    [
        ("ws7", "name=url pairs"),
        ("=http://x/v1", "name=url pairs"),
        ("ws7=ftp://x/v1", "must be http"),
        ("a=http://x/v1,a=http://y/v1", "twice"),
    ],
)
def test_a_malformed_backend_list_stops_the_start(monkeypatch, value, problem):
    monkeypatch.setenv("MODEL_BACKENDS", value)

    with pytest.raises(ImproperlyConfigured, match=problem):
        env_backends("MODEL_BACKENDS")


def test_a_well_formed_backend_list_is_read(monkeypatch):
    monkeypatch.setenv(
        "MODEL_BACKENDS", "ollama-ws7=http://ws7:11434/v1, vllm=https://gpu01/v1"
    )

    assert env_backends("MODEL_BACKENDS") == {
        "ollama-ws7": "http://ws7:11434/v1",
        "vllm": "https://gpu01/v1",
    }
