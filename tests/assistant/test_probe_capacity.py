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
from django.urls import reverse

from assistant import modelapi
from assistant.capacity_probe import DEFAULT_MAX_REQUESTS, Cell, RequestResult, suggest
from assistant.models import CapacityProbeRun, ModelProfile
from assistant.simulator import SimulatorConfig, SimulatorServer
from assistant.tasks import run_capacity_probe

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


@pytest.fixture
def probed_profile(capacity_api):
    return ModelProfile.ensure("deepseek-v3")


def start_probe_from_admin(admin_client, profile):
    return admin_client.post(
        reverse("admin:assistant_modelprofile_changelist"),
        {"action": "probe_capacity", "_selected_action": [profile.pk]},
        follow=True,
    )


def test_the_admin_action_queues_one_bounded_probe_per_model(
    admin_client, probed_profile, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as dispatched:
        start_probe_from_admin(admin_client, probed_profile)
        again = start_probe_from_admin(admin_client, probed_profile)

    run = CapacityProbeRun.objects.get()
    assert run.status == CapacityProbeRun.Status.QUEUED
    assert run.max_requests == DEFAULT_MAX_REQUESTS and run.timeout > 0
    assert len(dispatched) == 1
    assert "deepseek-v3" in again.content.decode()
    assert CapacityProbeRun.objects.count() == 1


def test_a_probe_from_admin_keeps_the_seed_table_and_its_limits_apply(
    admin_client, probed_profile
):
    run = CapacityProbeRun.objects.create(
        profile=probed_profile,
        concurrency=[1, 4],
        contexts=[2048, 4096],
        max_requests=20,
        timeout=2.0,
    )

    run_capacity_probe(run.pk)
    run_capacity_probe(run.pk)  # delivered twice: probed once

    run.refresh_from_db()
    assert run.status == CapacityProbeRun.Status.DONE, run.error
    assert run.requests_sent <= 20
    cells = {(cell["context"], cell["concurrency"]): cell for cell in run.cells}
    assert cells[(2048, 4)]["total_rate"] > cells[(2048, 1)]["total_rate"] > 0
    assert cells[(2048, 4)]["over_timeout"] == 0
    assert cells[(4096, 4)]["over_timeout"] > 0
    assert run.suggestion["concurrency_limit"] >= 1 and run.reasons

    page = admin_client.get(
        reverse("admin:assistant_capacityproberun_change", args=[run.pk])
    )
    assert page.status_code == 200
    assert str(cells[(2048, 4)]["total_rate"]) in page.content.decode()

    admin_client.post(
        reverse("admin:assistant_capacityproberun_changelist"),
        {"action": "apply_suggestion", "_selected_action": [run.pk]},
    )
    probed_profile.refresh_from_db()
    for name, value in run.suggestion.items():
        assert getattr(probed_profile, name) == value


def test_only_staff_reach_the_probe(client, probed_profile):
    from tests.factories import make_user

    client.force_login(make_user())
    response = start_probe_from_admin(client, probed_profile)

    assert CapacityProbeRun.objects.count() == 0
    assert "login" in response.redirect_chain[-1][0]
