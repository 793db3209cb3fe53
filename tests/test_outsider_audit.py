"""Every route and websocket action that names an object refuses an outsider.

A researcher owns one of everything (a conversation with a reply, a share
link, an attachment, a polish job, a conversion, a paper being read, a code
analysis, a preset, an API key with its usage); an outsider, signed in
with an account of their own, asks for each through every URL pattern of
the project and every action of the chat socket. Each must answer 403 or
404, show nothing of the owner's, and change nothing.

The registry below names every route of the resolver. A route added later
without an entry makes test_it_checks_every_route_of_the_project fail, so
it cannot ship without its outsider check (or a stated reason for having
none).
"""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from academic import code_actions, codebase
from academic.code_models import CodeAnalysis, CodeFile
from academic.models import Conversion, Paper, PaperSection, PolishJob
from assistant import metering
from assistant.api.models import ApiKey
from chat.actions import share_conversation
from chat.consumers import ChatConsumer
from chat.models import Attachment, Conversation, Message, Preset
from tests.academic.test_convert_views import formula_png
from tests.factories import add_exchange, make_user

# Appears in everything the owner has, so a leak shows in any response.
SECRET = "OWNER-SECRET-7f3a"

# Routes that take an object id, as (method, form data), with the object
# their argument names. The argument is filled in from the owner's objects.
OBJECT_ROUTES = {
    "chat-conversation": ("GET", {}, "conversation"),
    "chat-rename": ("POST", {"title": "taken over"}, "conversation"),
    "chat-pin": ("POST", {"pinned": "1"}, "conversation"),
    "chat-delete": ("POST", {}, "conversation"),
    "chat-restore": ("POST", {}, "deleted_conversation"),
    "chat-share": ("POST", {}, "conversation"),
    "chat-unshare": ("POST", {}, "conversation"),
    "chat-export-markdown": ("GET", {}, "conversation"),
    "chat-export-json": ("GET", {}, "conversation"),
    "chat-shared": ("GET", {}, "revoked_link"),
    "academic-job": ("GET", {}, "job"),
    "academic-job-status": ("GET", {}, "job"),
    "academic-job-chunks": ("GET", {}, "job"),
    "academic-decide": ("POST", {}, "job"),
    "academic-cancel": ("POST", {}, "job"),
    "academic-download": ("GET", {}, "job"),
    "academic-convert-status": ("GET", {}, "conversion"),
    "academic-convert-image": ("GET", {}, "conversion"),
    "academic-convert-again": ("POST", {}, "conversion"),
    "academic-paper": ("GET", {}, "paper"),
    "academic-paper-status": ("GET", {}, "paper"),
    "academic-paper-ask": ("POST", {}, "paper"),
    "academic-paper-cancel": ("POST", {}, "paper"),
    "academic-code-analysis": ("GET", {}, "analysis"),
    "academic-code-status": ("GET", {}, "analysis"),
    "academic-code-ask": ("POST", {}, "analysis"),
    "academic-code-cancel": ("POST", {}, "analysis"),
    "academic-code-source": ("GET", {}, "code_file"),
    "chat-settings": ("POST", {"prompt": "taken over"}, "conversation"),
    "chat-preset-rename": ("POST", {"name": "taken over"}, "preset"),
    "chat-preset-delete": ("POST", {}, "preset"),
    "api-key-rotate": ("POST", {}, "api_key"),
    "api-key-revoke": ("POST", {}, "api_key"),
}

# Routes that name no object: each lists only the signed-in user's own
# things, or none. The outsider's view of them is checked for the owner's
# secret all the same (OWN_LISTS).
OWN_LISTS = {
    "chat-home": "GET",
    "chat-conversations": "GET",
    "chat-export-all": "GET",
    "chat-search": "GET",
    "academic-home": "GET",
    "academic-convert": "GET",
    "usage-home": "GET",
    "academic-reading": "GET",
    "academic-code-home": "GET",
    "chat-presets": "GET",
    "api-keys": "GET",
    "api-usage": "GET",
    "api-usage-csv": "GET",
}
NO_OBJECT = {
    "healthz": "says the process is up, for the load balancer",
    "readyz": "names failing parts only (tests/assistant/test_health.py)",
    "login": "the sign-in page",
    "logout": "ends the caller's own session",
    "oidc-authenticate": "starts a sign-in",
    "oidc-callback": "finishes a sign-in",
    "set_language": "sets the caller's language cookie",
    "chat-import": "makes new conversations for the caller",
    "chat-attach": "stores a new file for the caller",
    "academic-convert-create": "starts a new conversion for the caller",
    "usage-overview": "staff only; test_it_keeps_the_staff_overview_to_staff",
    "chat-preset-create": "makes a new preset for the caller",
    # The /v1 endpoints take no object id and no session: the bearer key is
    # the caller, and answers carry nothing of other keys
    # (test_it_takes_only_a_key_on_the_key_endpoints).
    "api-models": "lists the models offered to the caller's key",
    "api-chat": "a completion billed to the caller's key",
    "api-embeddings": "embeddings billed to the caller's key",
    "api-unknown": "a 404 for any other /v1 path",
}
# The admin's own routes: only staff reach them (tests/assistant/
# test_throttling.py checks a non-staff user is sent to its sign-in).
STAFF_ONLY_NAMESPACES = {"admin"}


def project_route_names():
    """Every named route of the project, with its namespace if any."""
    names = set()

    def walk(patterns, namespace):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                inner = entry.namespace or namespace
                walk(entry.url_patterns, inner)
            elif isinstance(entry, URLPattern):
                if namespace in STAFF_ONLY_NAMESPACES:
                    continue
                if entry.name is None:
                    raise AssertionError(f"unnamed route {entry.pattern}")
                names.add(entry.name)

    walk(get_resolver().url_patterns, None)
    return names


def test_it_checks_every_route_of_the_project():
    registered = set(OBJECT_ROUTES) | set(OWN_LISTS) | set(NO_OBJECT)

    unchecked = project_route_names() - registered
    gone = registered - project_route_names()

    assert unchecked == set(), "add an outsider check for these routes"
    assert gone == set(), "these routes no longer exist; drop their checks"


def test_it_checks_every_action_of_the_chat_socket():
    assert set(ChatConsumer.ACTIONS) == set(SOCKET_CHECKS)


@pytest.fixture
def owned(monkeypatch):
    """One of everything, owned by the researcher, each carrying SECRET.

    The polish job and the code analysis are stored as queued, their model
    requests never dispatched: this file checks who may see them, and in
    the PostgreSQL configuration a real worker would otherwise still be
    writing to them while the test's tables are emptied.
    """
    from academic import code_tasks, tasks

    for task in (
        tasks.polish_chunk,
        code_tasks.summarise_part,
        code_tasks.write_overview,
    ):
        monkeypatch.setattr(task, "delay", lambda *args, **kwargs: None)
    owner = make_user("owner")
    conversation = Conversation.objects.create(
        user=owner, title=f"{SECRET} plans", model="deepseek-r1"
    )
    question, reply = add_exchange(
        conversation, f"{SECRET} question", answer=f"{SECRET} answer"
    )
    deleted = Conversation.objects.create(
        user=owner, title=f"{SECRET} deleted", model="deepseek-r1"
    )
    deleted.deleted_at = deleted.created
    deleted.save(update_fields=["deleted_at"])
    revoked = share_conversation(conversation)
    revoked.revoked_at = revoked.created
    revoked.save(update_fields=["revoked_at"])
    attachment = Attachment.objects.create(
        user=owner, name=f"{SECRET}.txt", kind="text", text=SECRET, size_bytes=10
    )
    analysis = _code_analysis(owner)
    return {
        "owner": owner,
        "conversation": conversation,
        "question": question,
        "reply": reply,
        "deleted_conversation": deleted,
        "revoked_link": revoked,
        "attachment": attachment,
        "job": _polish_job(owner),
        "conversion": _conversion(owner),
        "paper": _paper(owner),
        "analysis": analysis,
        "code_file": analysis.files.get(),
        "preset": Preset.objects.create(
            user=owner, name=f"{SECRET} preset", prompt=f"{SECRET} prompt"
        ),
        "api_key": _api_key(owner),
    }


def _polish_job(owner):
    from academic import actions
    from academic.encoding import decode_bytes

    document = actions.Document(
        f"{SECRET}.md",
        decode_bytes(f"# {SECRET}\n\nA paragraph to polish.\n".encode()),
        PolishJob.SourceKind.MARKDOWN,
    )
    fields = {
        "task": PolishJob.Task.POLISH,
        "preset": PolishJob.Preset.JOURNAL,
        "glossary": "",
        "model": "deepseek-v3",
        "file_name": f"{SECRET}.md",
    }
    return actions.start_job(owner, [document], fields)


def _conversion(owner):
    return Conversion.objects.create(
        owner=owner,
        kind="formula",
        target="latex",
        image=formula_png(),
        image_width=240,
        image_height=60,
        model="qwen2.5-vl-sim",
        status="done",
        source=f"\\text{{{SECRET}}}",
    )


def _paper(owner):
    """A paper still being read, so that a cancel would show."""
    paper = Paper.objects.create(
        owner=owner,
        title=f"{SECRET} paper",
        file_name=f"{SECRET}.pdf",
        source_kind=Paper.SourceKind.TEXT,
        model="deepseek-v3",
        summary=f"{SECRET} summary",
    )
    PaperSection.objects.create(
        paper=paper,
        position=0,
        title=f"{SECRET} methods",
        blocks=[{"page": 1, "text": f"{SECRET} text"}],
    )
    return paper


def _code_analysis(owner):
    code_project = codebase.read_upload("secret.py", f'SECRET = "{SECRET}"\n'.encode())
    return code_actions.start_analysis(
        owner, f"{SECRET}.py", code_project, "deepseek-v3", "en"
    )


def _api_key(owner):
    """A key with a request on it, so the usage pages have a row to leak."""
    key = ApiKey(name=f"{SECRET} key", user=owner)
    key.new_secret()
    key.save()
    metering.record_request(
        user=owner,
        kind="api",
        model="deepseek-r1",
        end_state="stop",
        prompt_tokens=1,
        completion_tokens=2,
        api_key=key,
    )
    return key


def route_arguments(obj):
    if isinstance(obj, CodeFile):
        return [obj.analysis_id, obj.path]
    if hasattr(obj, "token"):
        return [obj.token]
    return [obj.pk]


@pytest.fixture
def outsider():
    client = Client()
    client.force_login(make_user("outsider"))
    return client


def snapshot(owned):
    """What an outsider's request could change, to compare afterwards."""
    conversation = Conversation.objects.get(pk=owned["conversation"].pk)
    job = PolishJob.objects.get(pk=owned["job"].pk)
    return {
        "title": conversation.title,
        "pinned": conversation.pinned,
        "deleted": conversation.deleted_at,
        "restorable": Conversation.objects.get(
            pk=owned["deleted_conversation"].pk
        ).deleted_at,
        "links": list(conversation.shared_links.values_list("pk", "revoked_at")),
        "job": job.status,
        "conversions": Conversion.objects.filter(owner=owned["owner"]).count(),
        "settings": (
            conversation.preset_prompt,
            conversation.temperature,
            conversation.max_output_tokens,
            conversation.thinking,
        ),
        "paper": Paper.objects.filter(pk=owned["paper"].pk).values().get(),
        "analysis": CodeAnalysis.objects.filter(pk=owned["analysis"].pk).values().get(),
        "presets": list(Preset.objects.filter(user=owned["owner"]).values()),
        "keys": list(ApiKey.objects.filter(user=owned["owner"]).values()),
        "conversations": Conversation.objects.count(),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(OBJECT_ROUTES))
def test_it_refuses_the_outsider_on_each_route_that_names_an_object(
    name, owned, outsider
):
    method, data, kind = OBJECT_ROUTES[name]
    url = reverse(name, args=route_arguments(owned[kind]))
    before = snapshot(owned)

    if method == "GET":
        response = outsider.get(url)
    else:
        response = outsider.post(url, data)

    assert response.status_code in (403, 404), url
    assert SECRET not in _body(response)
    assert snapshot(owned) == before


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(OBJECT_ROUTES))
def test_it_serves_the_owner_on_the_same_routes(name, owned):
    """The refusals above come from the owner check, not a broken route."""
    method, data, kind = OBJECT_ROUTES[name]
    if kind == "revoked_link":
        # A revoked link refuses its owner too; the active one opens.
        target = share_conversation(owned["conversation"])
    else:
        target = owned[kind]
    client = Client()
    client.force_login(owned["owner"])
    url = reverse(name, args=route_arguments(target))

    response = client.get(url) if method == "GET" else client.post(url, data)

    assert response.status_code not in (403, 404), url


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(OWN_LISTS))
def test_it_lists_nothing_of_the_owners_to_the_outsider(name, owned, outsider):
    response = outsider.get(reverse(name), {"q": "answer"})

    assert response.status_code == 200
    assert SECRET not in _body(response)


@pytest.mark.django_db
def test_it_shows_an_active_share_link_to_any_signed_in_user(owned, outsider):
    """The one deliberate exception: a live link is readable by its holder,
    read-only, and shows only the shared conversation."""
    link = share_conversation(owned["conversation"])

    response = outsider.get(reverse("chat-shared", args=[link.token]))

    assert response.status_code == 200
    assert f"{SECRET} answer" in response.text
    assert f"{SECRET} deleted" not in response.text


@pytest.mark.django_db
def test_it_keeps_the_staff_overview_to_staff(outsider):
    response = outsider.get(reverse("usage-overview"))

    assert response.status_code == 403


# The /v1 endpoints and how each is called with a body a model would take.
KEY_ENDPOINTS = {
    "api-models": ("GET", None),
    "api-chat": (
        "POST",
        {"model": "deepseek-r1", "messages": [{"role": "user", "content": "hi"}]},
    ),
    "api-embeddings": ("POST", {"model": "bge-m3", "input": "hi"}),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(KEY_ENDPOINTS))
def test_it_takes_only_a_key_on_the_key_endpoints(name, owned, outsider):
    """A signed-in session is no key, nor is the owner's revoked key or a
    made-up one: each is refused before anything reaches a model or names
    a key of the owner's."""
    method, body = KEY_ENDPOINTS[name]
    revoked = ApiKey(name="revoked", user=owned["owner"])
    revoked_secret = revoked.new_secret()
    revoked.revoked_at = revoked.created
    revoked.save()
    records_before = owned["owner"].usage_records.count()

    for header in (None, f"Bearer {revoked_secret}", "Bearer ra-0000-guess"):
        extra = {"HTTP_AUTHORIZATION": header} if header else {}
        if method == "GET":
            response = outsider.get(reverse(name), **extra)
        else:
            response = outsider.post(
                reverse(name), body, content_type="application/json", **extra
            )

        assert response.status_code == 401, header
        assert SECRET not in _body(response)
        assert owned["api_key"].prefix not in _body(response)
    assert owned["owner"].usage_records.count() == records_before


@pytest.mark.django_db
def test_it_lists_models_to_an_outsiders_own_key_without_the_owners(owned, outsider):
    key = ApiKey(name="outsider's", user=make_user("key-holder"))
    raw_key = key.new_secret()
    key.save()

    response = outsider.get(
        reverse("api-models"), HTTP_AUTHORIZATION=f"Bearer {raw_key}"
    )
    unknown = outsider.get(reverse("api-unknown", args=["keys"]))

    assert response.status_code == 200
    assert SECRET not in _body(response)
    assert owned["api_key"].prefix not in _body(response)
    assert unknown.status_code == 404
    assert SECRET not in _body(unknown)


def _body(response):
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return response.content.decode(errors="replace")


# The chat socket. Each check sends the action with the owner's object and
# expects "refused"/"not_found" and nothing written.


def socket_payloads(owned):
    conversation = owned["conversation"].pk
    reply = owned["reply"].pk
    return {
        "watch": {
            "action": "watch",
            "conversation_id": conversation,
            "open_replies": [reply],
        },
        "send": {
            "action": "send",
            "conversation_id": conversation,
            "text": "mine now",
            "model": "deepseek-r1",
        },
        "stop": {"action": "stop", "message_id": reply},
        "retry": {"action": "retry", "message_id": reply},
        "regenerate": {
            "action": "regenerate",
            "message_id": reply,
            "model": "deepseek-r1",
        },
        "edit": {
            "action": "edit",
            "message_id": owned["question"].pk,
            "text": "mine now",
            "model": "deepseek-r1",
        },
        "switch": {"action": "switch", "message_id": reply},
        "path": {"action": "path", "conversation_id": conversation},
    }


SOCKET_CHECKS = {
    "watch",
    "send",
    "stop",
    "retry",
    "regenerate",
    "edit",
    "switch",
    "path",
}


@database_sync_to_async
def conversation_state(conversation):
    """Every stored field of the conversation and its messages: a branch
    switch changes only which one is on show, so a count would miss it."""
    return (
        Conversation.objects.filter(pk=conversation.pk).values().get(),
        list(Message.objects.filter(conversation=conversation).values()),
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize("action", sorted(SOCKET_CHECKS))
async def test_it_refuses_the_outsider_on_each_socket_action(action, model_api, owned):
    outsider = await database_sync_to_async(make_user)("outsider")
    payload = socket_payloads(owned)[action]
    messages_before = await database_sync_to_async(Message.objects.count)()
    state_before = await conversation_state(owned["conversation"])
    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    communicator.scope["user"] = outsider
    connected, _ = await communicator.connect()
    assert connected

    await communicator.send_json_to(payload)
    answer = await communicator.receive_json_from(timeout=10)
    await communicator.disconnect()

    assert answer == {"type": "refused", "code": "not_found"}
    assert SECRET not in str(answer)
    messages_after = await database_sync_to_async(Message.objects.count)()
    assert messages_after == messages_before
    assert await conversation_state(owned["conversation"]) == state_before


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_never_sends_another_users_attachment(model_api, owned):
    """An outsider who names the owner's upload in a new question of their
    own gets an answer without it, and the upload stays the owner's."""
    outsider = await database_sync_to_async(make_user)("outsider")
    communicator = WebsocketCommunicator(ChatConsumer.as_asgi(), "/ws/chat/")
    communicator.scope["user"] = outsider
    await communicator.connect()

    await communicator.send_json_to(
        {
            "action": "send",
            "conversation_id": None,
            "text": "what does my file say?",
            "model": "deepseek-r1",
            "attachment_ids": [owned["attachment"].pk],
        }
    )
    posted = await communicator.receive_json_from(timeout=10)
    await communicator.disconnect()

    assert posted["type"] == "posted"
    assert posted["question"]["attachments"] == []
    attachment = await database_sync_to_async(Attachment.objects.get)(
        pk=owned["attachment"].pk
    )
    assert attachment.message_id is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_closes_an_anonymous_socket_through_the_full_stack():
    """Through the app's own ASGI stack (origin check, session, auth): a
    socket from the app's origin without a session is closed with 4401."""
    from assistant.asgi import application

    communicator = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"origin", b"http://127.0.0.1")]
    )
    connected, _ = await communicator.connect()
    assert connected

    closed = await communicator.receive_output(timeout=10)
    assert closed == {"type": "websocket.close", "code": 4401}
    # The consumer's task ends here, not in the teardown of a later test.
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_refuses_a_signed_in_socket_from_another_origin(owned):
    """A page on another site cannot ride the user's session cookie."""
    from assistant.asgi import application

    client = Client()
    await database_sync_to_async(client.force_login)(owned["owner"])
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()

    for origin in (b"http://evil.example", b"null"):
        communicator = WebsocketCommunicator(
            application,
            "/ws/chat/",
            headers=[(b"cookie", cookie), (b"origin", origin)],
        )
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        assert not connected, origin

    without_origin = WebsocketCommunicator(
        application, "/ws/chat/", headers=[(b"cookie", cookie)]
    )
    connected, _ = await without_origin.connect()
    await without_origin.disconnect()
    assert not connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_it_opens_a_socket_for_the_session_from_the_apps_origin(owned):
    from assistant.asgi import application

    client = Client()
    await database_sync_to_async(client.force_login)(owned["owner"])
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        application,
        "/ws/chat/",
        headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1")],
    )
    connected, _ = await communicator.connect()
    assert connected

    await communicator.send_json_to(
        {"action": "watch", "conversation_id": owned["conversation"].pk}
    )
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()
