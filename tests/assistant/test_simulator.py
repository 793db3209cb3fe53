"""The model simulator, driven over real HTTP by the official openai client."""

import http.client
import json
import socket
import time
import urllib.request

import openai
import pytest

from assistant.management.commands.simulate_model import Command, config_from_options
from assistant.simulator import MODELS, SimulatorConfig, SimulatorServer
from assistant.simulator.server import FIRST_REASONING_LIMIT, SimulatorStats

FAST = SimulatorConfig(token_delay=0, first_token_delay=0, chunk_chars=20)
QUESTION = "How much energy does one gram of matter hold?"
FORMULA = "$E = mc^2$"
REASONING_MODELS = [
    "deepseek-r1",
    "deepseek-r1-vllm",
    "deepseek-r1-tags",
    "deepseek-r1-prefilled",
]


@pytest.fixture
def server():
    simulator = SimulatorServer(host="127.0.0.1", port=0, config=FAST).start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=10)


def ask(text):
    return [{"role": "user", "content": text}]


def collect(stream):
    """Reasoning, content, finish reasons and usage gathered from a stream."""
    reasoning, content, finish_reasons, usage = [], [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta
            reasoning.append(getattr(delta, "reasoning_content", None) or "")
            reasoning.append(getattr(delta, "reasoning", None) or "")
            content.append(delta.content or "")
            if choice.finish_reason:
                finish_reasons.append(choice.finish_reason)

    return "".join(reasoning), "".join(content), finish_reasons, usage


def wait_for(condition, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def read_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def send_raw(server, data):
    """Send raw bytes and return what the server answers before closing."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_it_lists_models(client):
    models = {model.id: model for model in client.models.list()}

    assert set(models) == set(MODELS)
    assert models["deepseek-r1"].max_model_len == 16384
    assert models["deepseek-v3"].max_model_len == 65536
    assert models["deepseek-v3"].owned_by == "simulator"


def test_it_answers_without_streaming(client):
    completion = client.chat.completions.create(
        model="deepseek-r1", messages=ask(QUESTION)
    )

    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop"
    assert FORMULA in message.content
    assert "```python" in message.content
    assert "energy" in message.reasoning_content
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens_details.reasoning_tokens > 0


@pytest.mark.parametrize("model", REASONING_MODELS)
def test_it_streams_each_reasoning_format(client, model):
    stream = client.chat.completions.create(
        model=model, messages=ask(QUESTION), stream=True
    )

    reasoning, content, finish_reasons, _ = collect(stream)
    assert finish_reasons == ["stop"]
    assert FORMULA in content
    assert "$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$" in content
    assert "```python" in content

    if model == "deepseek-r1-tags":
        assert content.startswith("<think>")
        assert "How much energy" in content.partition("</think>")[0]
    elif model == "deepseek-r1-prefilled":
        assert "How much energy" in content.partition("</think>")[0]
        assert "<think>" not in content
    else:
        assert "How much energy" in reasoning
        assert "think>" not in content


def test_it_streams_v3_without_reasoning(client):
    stream = client.chat.completions.create(
        model="deepseek-v3", messages=ask(QUESTION), stream=True
    )

    reasoning, content, _, _ = collect(stream)
    assert reasoning == ""
    assert content.startswith("## On")


def test_it_sends_usage_in_a_final_chunk(client):
    stream = client.chat.completions.create(
        model="deepseek-r1",
        messages=ask(QUESTION),
        stream=True,
        stream_options={"include_usage": True},
    )

    chunks = list(stream)
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage.completion_tokens == len(chunks) - 2
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    reasoning_tokens = usage.completion_tokens_details.reasoning_tokens
    assert 0 < reasoning_tokens < usage.completion_tokens


def test_it_cuts_the_reply_at_max_tokens(client):
    stream = client.chat.completions.create(
        model="deepseek-r1",
        messages=ask(QUESTION),
        stream=True,
        max_tokens=3,
        stream_options={"include_usage": True},
    )

    reasoning, content, finish_reasons, usage = collect(stream)
    assert finish_reasons == ["length"]
    assert usage.completion_tokens == 3
    assert len(reasoning) == 3 * FAST.chunk_chars
    assert content == ""


def test_it_honours_max_completion_tokens_without_streaming(client):
    completion = client.chat.completions.create(
        model="deepseek-r1-tags", messages=ask(QUESTION), max_completion_tokens=2
    )

    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content.startswith("<think>")
    assert completion.usage.completion_tokens == 2


def test_it_answers_chinese_questions_in_chinese(client):
    stream = client.chat.completions.create(
        model="deepseek-r1", messages=ask("一克物质含有多少能量？"), stream=True
    )

    reasoning, content, _, _ = collect(stream)
    assert "一克物质含有多少能量" in reasoning
    assert "下面是一个简短而**有条理**的回答" in content
    assert FORMULA in content


def test_it_rejects_an_unknown_model(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-x", messages=ask(QUESTION))

    assert caught.value.body["code"] == "model_not_found"


def test_it_rejects_empty_messages(client, server):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="deepseek-r1", messages=[])

    assert server.stats["rejected"] == 1


def test_it_requires_the_configured_api_key():
    config = SimulatorConfig(token_delay=0, first_token_delay=0, api_key="secret")
    with SimulatorServer(port=0, config=config) as server:
        wrong = openai.OpenAI(base_url=server.url, api_key="guess", max_retries=0)
        right = openai.OpenAI(base_url=server.url, api_key="secret", max_retries=0)

        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="deepseek-r1", messages=ask("Hi"))
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        completion = right.chat.completions.create(
            model="deepseek-r1", messages=ask("Hi")
        )

    assert completion.choices[0].finish_reason == "stop"


def test_it_counts_a_client_that_leaves_mid_stream(client, server):
    stream = client.chat.completions.create(
        model="deepseek-r1",
        messages=ask("Tell me a long story [[sim delay=0.02 chunk=3 words=2000]]"),
        stream=True,
    )
    for _ in range(5):
        next(stream)

    closed_at = time.monotonic()
    stream.close()

    assert wait_for(lambda: server.stats["disconnected"] == 1)
    stats = server.stats
    assert stats["last_disconnect_at"] - closed_at < 1.0
    assert stats["completed"] == 0
    assert stats["active"] == 0


def test_it_sends_keepalive_comments_while_waiting():
    config = SimulatorConfig(token_delay=0, first_token_delay=0.5, keepalive=0.1)
    body = {"model": "deepseek-v3", "messages": ask("Hi"), "stream": True}
    with SimulatorServer(port=0, config=config) as server:
        request = urllib.request.Request(
            f"{server.url}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            lines = response.read().decode().splitlines()

    comments = [line for line in lines if line.startswith(":")]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert len(comments) >= 3
    assert all(line == ": keep-alive" for line in lines[:first_data] if line)
    assert "data: [DONE]" in lines


def test_it_honours_the_directive(client, server):
    stream = client.chat.completions.create(
        model="deepseek-r1",
        messages=ask("Explain gravity [[sim format=tags chunk=1 words=50 first=0]]"),
        stream=True,
    )

    deltas = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    content = "".join(deltas)
    assert content.startswith("<think>")
    assert all(len(delta) <= 1 for delta in deltas)
    assert '"Explain gravity"' in content
    assert "[[sim" not in content
    assert content.count(" ") > 100
    assert "[[sim" in server.stats["recent_requests"][-1]["messages"][0]["content"]


def test_it_accepts_settings_in_the_body(client):
    completion = client.chat.completions.create(
        model="deepseek-r1",
        messages=ask(QUESTION),
        extra_body={"simulator": {"format": "prefilled", "chunk": 5}},
    )

    content = completion.choices[0].message.content
    reasoning, closer, answer = content.partition("</think>\n\n")
    assert closer
    assert "<think>" not in content
    pieces = -(-len(reasoning + closer) // 5) + -(-len(answer) // 5)
    assert completion.usage.completion_tokens == pieces


def test_it_rejects_a_bad_directive(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="deepseek-r1", messages=ask("Hi [[sim format=xml]]")
        )


def test_it_records_when_a_tagged_reply_sent_its_first_reasoning(client, server):
    asked_at = time.monotonic()
    stream = client.chat.completions.create(
        model="deepseek-r1",
        messages=ask(f"{QUESTION} [[sim tag=bench-7_a]]"),
        stream=True,
    )

    received_at, reasoning = None, []
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        text = getattr(delta, "reasoning_content", None)
        if text and received_at is None:
            received_at = time.monotonic()
        reasoning.append(text or "")

    sent_at = server.stats["first_reasoning_sent"]["bench-7_a"]
    assert asked_at < sent_at <= received_at
    assert "bench-7_a" not in "".join(reasoning)


def test_it_records_nothing_for_an_untagged_or_unstreamed_reply(client, server):
    client.chat.completions.create(
        model="deepseek-r1", messages=ask(QUESTION), stream=True
    ).close()
    client.chat.completions.create(
        model="deepseek-r1", messages=ask(f"{QUESTION} [[sim tag=whole]]")
    )

    assert server.stats["first_reasoning_sent"] == {}


def test_it_rejects_a_bad_tag(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="deepseek-r1", messages=ask("Hi [[sim tag=a.b]]")
        )


def test_it_keeps_only_the_latest_first_reasoning_times():
    stats = SimulatorStats()
    for number in range(FIRST_REASONING_LIMIT + 2):
        stats.record_first_reasoning(f"tag{number}", float(number))
    stats.record_first_reasoning("tag2", 9999.0)

    sent = stats.snapshot()["first_reasoning_sent"]
    assert len(sent) == FIRST_REASONING_LIMIT
    assert "tag0" not in sent
    assert "tag1" not in sent
    assert sent["tag2"] == 9999.0
    assert list(sent)[-1] == "tag2"


def test_it_shows_stats_and_the_last_request_over_http(client, server):
    client.chat.completions.create(
        model="deepseek-v3",
        messages=ask(QUESTION),
        max_tokens=400,
        stream=True,
        stream_options={"include_usage": True},
    ).close()
    assert wait_for(lambda: server.stats["active"] == 0)

    base = server.url.removesuffix("/v1")
    stats = read_json(f"{base}/sim/stats")
    last = read_json(f"{base}/sim/requests/last")
    assert stats["requests"] == 1
    assert last["max_tokens"] == 400
    assert last["stream_options"] == {"include_usage": True}
    assert last["messages"] == ask(QUESTION)


def test_it_survives_malformed_requests(client, server):
    bad_length = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: nonsense\r\n\r\n{}"
    )
    not_json = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 9\r\n\r\nnot json!"
    )
    cut_short = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b'Content-Length: 500\r\n\r\n{"model"'
    )

    assert send_raw(server, bad_length).startswith(b"HTTP/1.1 400")
    assert send_raw(server, not_json).startswith(b"HTTP/1.1 400")
    assert send_raw(server, cut_short) == b""
    assert b"400" in send_raw(server, b"NOT A REQUEST\r\n\r\n")

    completion = client.chat.completions.create(model="deepseek-v3", messages=ask("Hi"))
    assert completion.choices[0].finish_reason == "stop"


def test_it_replays_queued_events(server):
    event = '{"choices": [{"index": 0, "delta": {"content": "Half"}}]}'
    server.queue_events([event])
    server.queue_error(400, "context limit 8192 tokens")
    body = json.dumps({"model": "deepseek-r1", "messages": ask("Hi")})

    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    connection.request("POST", "/v1/chat/completions", body)
    replayed = connection.getresponse().read()
    connection.request("POST", "/v1/chat/completions", body)
    refused = connection.getresponse()
    error = json.loads(refused.read())["error"]
    connection.close()

    assert replayed == f"data: {event}\n\n".encode()
    assert refused.status == 400
    assert error["message"] == "context limit 8192 tokens"


def test_it_builds_config_from_command_options():
    parser = Command().create_parser("manage.py", "simulate_model")
    arguments = [
        "--port", "0", "--token-delay", "0.01", "--first-token-delay", "1.5",
        "--chunk-chars", "7", "--keepalive", "2", "--api-key", "k",
    ]  # fmt: skip
    options = vars(parser.parse_args(arguments))

    config = config_from_options(options)

    assert options["port"] == 0
    assert config == SimulatorConfig(
        token_delay=0.01, first_token_delay=1.5, chunk_chars=7, keepalive=2, api_key="k"
    )
    assert config_from_options(vars(parser.parse_args([]))) == SimulatorConfig()
