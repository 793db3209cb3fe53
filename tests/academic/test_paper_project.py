"""A real multi-file paper, polished end to end as an uploaded project.

The SciPy 1.0 paper (../shared/papers/scipy-1.0) is zipped as an author
would upload it, polished through the form, the chunk tasks and the model
simulator over HTTP, and downloaded with every change accepted and with
every change rejected.
"""

import io
import zipfile

import pytest
from django.core.cache import cache
from django.urls import reverse

from academic.models import PolishChunk
from academic.placeholders import MaskedText
from academic.prompts import split_edges
from assistant import modelapi
from assistant.simulator.polish import polish as simulated_polish
from assistant.simulator.server import SimulatorConfig, SimulatorServer
from tests.academic.jobs import run
from tests.academic.test_project import members_of, post_project
from tests.factories import make_user

pytestmark = pytest.mark.django_db

# The paper's figures are not in the shared copy; stand-ins at the paths it
# includes show that binary members come back untouched.
FIGURES = {
    "static/scipy_timeline.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "static/asv.pdf": b"%PDF-1.5\n" + bytes(range(256)) * 4,
}


@pytest.fixture(scope="module")
def fast_simulator():
    """A simulator that streams in long pieces without pauses: the paper
    is some 600 answers' worth of prose, and the pacing is not under test."""
    server = SimulatorServer(
        host="127.0.0.1",
        port=0,
        config=SimulatorConfig(
            token_delay=0.0, first_token_delay=0.0, chunk_chars=64, keepalive=1.0
        ),
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fast_model_api(settings, fast_simulator):
    settings.MODEL_API_BASE_URL = fast_simulator.url
    settings.MODEL_API_KEY = ""
    cache.delete(modelapi.MODEL_LIST_CACHE_KEY)
    fast_simulator.reset_stats()
    return fast_simulator


def zip_paper(folder):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, path.name)
        for name, data in FIGURES.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def simulator_text(polish_file):
    """The file as the simulator's answers make it, worked out here from
    what each chunk sent rather than read from what the job stored."""
    protected = {int(number): text for number, text in polish_file.protected.items()}
    pieces = []
    for chunk in polish_file.chunks.all():
        lead, core, trail = split_edges(chunk.masked_text)
        answer = lead + simulated_polish(core).strip() + trail
        pieces.append(MaskedText(text="", originals=protected).restore(answer))
    return "".join(pieces)


def download_all(client, job, accepted):
    decide = reverse("academic-decide", args=[job.pk])
    client.post(decide, {"all": accepted}, content_type="application/json")
    response = client.get(reverse("academic-download", args=[job.pk]))
    return members_of(response.content)


def test_it_polishes_the_scipy_paper_in_place_and_undoes_it_exactly(
    client, fast_model_api, shared_dir
):
    data = zip_paper(shared_dir / "papers" / "scipy-1.0")
    original = members_of(data)
    client.force_login(make_user())

    job = run(post_project(client, data))
    accepted = download_all(client, job, True)
    rejected = download_all(client, job, False)

    edited = list(job.files.values_list("path", flat=True))
    inputs = [
        "core-dev.tex",
        "subpackages.tex",
        "ckdtree.tex",
        "scipy-optimize.tex",
        "poly.tex",
        "consortium.tex",
    ]
    assert edited[0] == "paper.tex" and sorted(edited[1:]) == sorted(inputs)
    assert job.not_processed == []
    kept = [
        (chunk.file.path, chunk.failure_code, chunk.failure_detail)
        for chunk in job.chunks.filter(status=PolishChunk.Status.KEPT)
    ]
    # The simulator damages nothing unless asked: a chunk kept here would
    # be the masking, chunking or checks failing on real LaTeX.
    assert kept == []
    assert accepted.keys() == original.keys() == rejected.keys()
    assert rejected == original
    asked = job.chunks.filter(attempts__gte=1).values_list("file__path", flat=True)
    # core-dev.tex holds only \author and \affil lines, protected whole.
    assert set(asked) == set(edited) - {"core-dev.tex"}
    for polish_file in job.files.all():
        assert accepted[polish_file.path].decode() == simulator_text(polish_file)
    changed = {path for path in edited if accepted[path] != original[path]}
    # The simulator's edits (academic prose clichés) find something to
    # change in these three; the other inputs come back as its answers
    # left them, which is as they were.
    assert changed == {"paper.tex", "ckdtree.tex", "scipy-optimize.tex"}
    for unedited in ["references.bib", "LICENSE", *FIGURES]:
        assert accepted[unedited] == original[unedited]
