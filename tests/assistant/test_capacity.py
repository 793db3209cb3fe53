"""The simulator's capacity mode, against the shape of the seed's measurements."""

import http.client
import json
import threading
import time

import pytest

from assistant.management.commands.simulate_model import Command, config_from_options
from assistant.simulator import SimulatorConfig, SimulatorServer
from assistant.simulator.capacity import token_intervals, total_tokens_per_second

REPLY_TOKENS = 500


def per_request_rate(concurrency, prompt_tokens=2048):
    intervals = token_intervals([prompt_tokens] * concurrency)
    return [None if interval is None else 1 / interval for interval in intervals]


def test_it_matches_the_measured_totals_at_4_and_16():
    assert total_tokens_per_second(4) == pytest.approx(64, rel=0.02)
    assert total_tokens_per_second(16) == pytest.approx(122.7, rel=0.02)


def test_it_levels_off_as_concurrency_grows():
    totals = [total_tokens_per_second(n) for n in range(1, 49)]

    assert totals == sorted(totals)
    assert totals[-1] < 180
    # One more request adds a tenth as much at 32 as it does at 1.
    assert totals[32] - totals[31] < (totals[1] - totals[0]) / 10


def test_it_slows_each_request_as_more_run():
    rates = [per_request_rate(n)[0] for n in (1, 4, 8, 16, 32)]

    assert rates == sorted(rates, reverse=True)
    assert rates[1] == pytest.approx(16, rel=0.02)
    # At 32 a reply of a few hundred tokens takes well over a minute.
    assert REPLY_TOKENS / rates[-1] > 60


def test_it_stalls_everything_at_64_users():
    assert per_request_rate(64) == [None] * 64


def test_it_stalls_8k_prompts_unless_alone():
    assert per_request_rate(4, prompt_tokens=8192) == [None] * 4
    assert per_request_rate(1, prompt_tokens=8192)[0] is not None


def test_it_generates_4k_prompts_one_at_a_time():
    """Three of four concurrent 4k prompts wait for the one before them."""
    rates = per_request_rate(4, prompt_tokens=4096)

    assert rates[1:] == [None, None, None]
    first_reply_seconds = REPLY_TOKENS / rates[0]
    assert 30 < first_reply_seconds < 60
    assert 2 * first_reply_seconds > 60


def test_it_lets_short_prompts_run_beside_a_long_one():
    intervals = token_intervals([4096, 4096, 1000])

    assert intervals[0] is not None
    assert intervals[1] is None
    assert intervals[2] is not None
    assert intervals[2] < intervals[0]


def test_it_reads_capacity_mode_from_the_command_line():
    parser = Command().create_parser("manage.py", "simulate_model")
    arguments = ["--capacity-mode", "--capacity-time-scale", "0.02"]

    config = config_from_options(vars(parser.parse_args(arguments)))

    assert config.capacity_mode is True
    assert config.capacity_time_scale == 0.02


def test_it_refuses_a_time_scale_of_zero():
    with pytest.raises(ValueError):
        SimulatorConfig(capacity_mode=True, capacity_time_scale=0)


@pytest.fixture
def capacity_server():
    # The first token's delay stands for the prefill, during which requests
    # sent together all arrive.
    config = SimulatorConfig(
        first_token_delay=0.3,
        chunk_chars=20,
        keepalive=0.2,
        capacity_mode=True,
        capacity_time_scale=0.02,
    )
    server = SimulatorServer(host="127.0.0.1", port=0, config=config).start()
    yield server
    server.stop()


def stream_lines(server, prompt_tokens, seconds, lines):
    """Stream one reply for `seconds`, keeping each non-empty line."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    body = {
        "model": "deepseek-v3",
        "stream": True,
        "messages": [{"role": "user", "content": "x" * (3 * prompt_tokens)}],
    }
    connection.request("POST", "/v1/chat/completions", json.dumps(body))
    response = connection.getresponse()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = response.fp.readline().decode().strip()
        if line.startswith((":", "data:")):
            lines.append(line)
        if line == "data: [DONE]":
            break
    connection.close()


def test_it_streams_only_keepalives_to_four_8k_prompts(capacity_server):
    lines = [[] for _ in range(4)]
    threads = [
        threading.Thread(target=stream_lines, args=(capacity_server, 8192, 1.5, out))
        for out in lines
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    for received in lines:
        assert received
        assert all(line == ": keep-alive" for line in received)


def test_it_streams_a_2k_prompt_to_the_end(capacity_server):
    lines = []

    stream_lines(capacity_server, 2048, 10, lines)

    assert lines[-1] == "data: [DONE]"
    assert sum(line.startswith("data: {") for line in lines) > 10
    # Every paced token is counted, for the benchmark's server-side total;
    # the first chunk carries the role alone.
    chunks = sum(line.startswith("data: {") for line in lines)
    assert capacity_server.stats["paced_tokens"] == chunks - 1
