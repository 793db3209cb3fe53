"""The capacity probe against the simulator's capacity mode, over real HTTP.

Time runs 25 times faster than on the seed's server (capacity_time_scale
0.04), so the probe's timeout of 2 s stands for 50 s there: a 2k prompt
alone or four at once finish well inside it, a 4k prompt alone too, but
four 4k prompts go one at a time and the last ones run over.
"""

from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from assistant import modelapi
from assistant.capacity_probe import Cell, RequestResult, suggest
from assistant.models import ModelProfile
from assistant.simulator import SimulatorConfig, SimulatorServer

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def capacity_simulator():
    config = SimulatorConfig(
        first_token_delay=0.3,
        chunk_chars=3,
        keepalive=0.2,
        capacity_mode=True,
        capacity_time_scale=0.04,
    )
    server = SimulatorServer(host="127.0.0.1", port=0, config=config).start()
    yield server
    server.stop()


@pytest.fixture
def capacity_api(settings, capacity_simulator):
    settings.MODEL_API_BASE_URL = capacity_simulator.url
    settings.MODEL_API_KEY = ""
    cache.delete(modelapi.MODEL_LIST_CACHE_KEY)
    capacity_simulator.reset_stats()
    return capacity_simulator


def probe(*arguments):
    out, err = StringIO(), StringIO()
    call_command(
        "probe_capacity", "--model", "deepseek-v3", "--timeout", "2",
        "--pause", "0.3", *arguments, stdout=out, stderr=err,
    )  # fmt: skip
    return out.getvalue()


def row(output, context, concurrency):
    for line in output.splitlines():
        fields = line.split()
        if fields[:2] == [str(context), str(concurrency)]:
            return fields
    raise AssertionError(f"no row for {concurrency} x {context} in:\n{output}")


def test_it_measures_the_grid_and_suggests_limits(capacity_api):
    output = probe("--concurrency", "1,4,8", "--context", "2048,4096", "--save")

    for concurrency in (1, 4, 8):
        fields = row(output, 2048, concurrency)
        assert fields[4] == f"0/{concurrency}"  # none over the timeout
        assert float(fields[2]) > 0 and float(fields[3]) > 0
    assert row(output, 4096, 1)[4] == "0/1"
    over = row(output, 4096, 4)[4]
    assert over != "0/4" and over.endswith("/4")
    assert "already went over the timeout" in " ".join(row(output, 4096, 8))

    # One calibration request and the cells that ran: 1+4+8 and 1+4.
    assert capacity_api.stats["requests"] == 19
    assert "characters a token (measured)" in output
    assert "concurrency_limit = 8" in output
    assert "long_prompt_tokens = 2049, long_prompt_cost = 8" in output

    profile = ModelProfile.objects.get(name="deepseek-v3")
    assert profile.concurrency_limit == 8
    assert (profile.long_prompt_tokens, profile.long_prompt_cost) == (2049, 8)


def test_it_sends_no_more_requests_than_allowed(capacity_api):
    output = probe(
        "--concurrency", "1,4", "--context", "2048,4096", "--max-requests", "6"
    )

    assert capacity_api.stats["requests"] <= 6
    assert "would pass --max-requests 6" in " ".join(row(output, 4096, 4))


def test_it_cuts_requests_at_the_timeout(capacity_api):
    """Four 8k prompts stall the server: the probe ends them and goes on."""
    output = probe("--concurrency", "4", "--context", "8192")

    fields = row(output, 8192, 4)
    assert fields[4] == "4/4"
    assert "No concurrency at 8192 tokens finished" in output


def test_it_refuses_a_malformed_grid(capacity_api):
    with pytest.raises(CommandError, match="positive whole numbers"):
        probe("--concurrency", "1,x")
    assert capacity_api.stats["requests"] == 0


def cell(context, concurrency, finished):
    requests = [RequestResult(finished=finished) for _ in range(concurrency)]
    return Cell(context, concurrency, requests=requests, wall_s=1.0)


def test_it_caps_the_input_below_a_size_where_nothing_finished():
    cells = [
        cell(2048, 4, True),
        cell(2048, 8, False),
        cell(4096, 1, True),
        cell(4096, 4, False),
        cell(8192, 1, False),
    ]

    suggestion = suggest(cells, timeout=60)

    assert suggestion.safe == {2048: 4, 4096: 1, 8192: 0}
    assert suggestion.concurrency_limit == 4
    assert suggestion.long_prompt_tokens == 2049
    assert suggestion.long_prompt_cost == 4
    assert suggestion.input_limit == 4096
