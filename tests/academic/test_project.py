"""LaTeX projects in a zip: the main file, the inputs followed, the files
edited in place, and archives that must be refused."""

import io
import stat
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from academic import project
from academic.models import PolishFile, PolishJob
from tests.academic.jobs import run
from tests.factories import make_user


def zip_folder(folder):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def zip_members(members, link=None):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def post_project(client, data, **fields):
    """The job the workspace's form starts for the zip `data`, not yet run."""
    values = {
        "file": SimpleUploadedFile("project.zip", data),
        "task": "polish",
        "preset": "journal",
        "model": "deepseek-v3",
        "source_kind": "latex",
        **fields,
    }
    response = client.post(reverse("academic-home"), values)
    assert response.status_code == 302, response.content.decode()
    return PolishJob.objects.latest("created")


def members_of(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_it_follows_inputs_but_not_a_macro_argument_c03(shared_dir):
    data = zip_folder(shared_dir / "academic-cases" / "c03_macro_input")

    latex_project = project.read_project(data)

    assert latex_project.edit_order == ["main.tex", "parts/intro.tex"]
    assert latex_project.not_processed == [
        {"path": "parts/method.tex", "reason": "unreached"}
    ]


def test_it_finds_the_scipy_papers_main_file_and_every_input(shared_dir):
    data = zip_folder(shared_dir / "papers" / "scipy-1.0")

    latex_project = project.read_project(data)

    assert latex_project.edit_order[0] == "paper.tex"
    assert set(latex_project.edit_order) == {
        "paper.tex",
        "core-dev.tex",
        "subpackages.tex",
        "ckdtree.tex",
        "scipy-optimize.tex",
        "poly.tex",
        "consortium.tex",
    }
    assert latex_project.not_processed == []


def test_it_lists_missing_inputs_and_skips_commented_ones_thuthesis(shared_dir):
    data = zip_folder(shared_dir / "papers" / "thuthesis")

    latex_project = project.read_project(data)

    assert latex_project.edit_order[0] == "thuthesis-example.tex"
    assert "data/chap04.tex" in latex_project.edit_order
    missing = {item["path"] for item in latex_project.not_processed}
    assert "thusetup.tex" in missing and "data/appendix.tex" in missing
    assert "data/appendix-survey.tex" not in missing


def test_it_reads_bare_and_braced_inputs():
    text = (
        "\\input intro\n\\include{chapters/two}\n% \\input{old}\n"
        "\\newcommand{\\part}[1]{\\input{#1}}\n\\subfile{extra.tex}\n"
    )

    assert project.input_targets(text) == ["intro", "chapters/two", "extra.tex"]


@pytest.mark.django_db
def test_it_follows_only_tex_sources_and_lists_other_inputs(client, model_api):
    """A .pgf picture and a .csv table input by the paper are data, not
    prose: they come back untouched and the job says why; "v1.2" is the
    v1.2.tex that TeX reads first."""
    main = (
        b"\\documentclass{article}\n\\begin{document}\n"
        b"\\input{fig.pgf}\n\\input{data/table.csv}\n\\input{notes/v1.2}\n"
        b"\\input{intro}\n\\end{document}\n"
    )
    members = {
        "main.tex": main,
        "intro.tex": b"In addition, we study a lot of cases.\n",
        "fig.pgf": b"\\begin{pgfpicture}\\pgftext{In addition}\\end{pgfpicture}\n",
        "data/table.csv": b"method, error\nours, 0.1\n",
        "notes/v1.2.tex": b"Some notes on the second version.\n",
    }
    data = zip_members(members)
    client.force_login(make_user())

    latex_project = project.read_project(data)
    job = run(post_project(client, data, task="grammar"))
    page = client.get(job.get_absolute_url()).content.decode()
    download = client.get(reverse("academic-download", args=[job.pk]))
    result = members_of(download.content)

    assert latex_project.edit_order == ["main.tex", "notes/v1.2.tex", "intro.tex"]
    assert latex_project.not_processed == [
        {"path": "fig.pgf", "reason": "not_tex", "from": "main.tex"},
        {"path": "data/table.csv", "reason": "not_tex", "from": "main.tex"},
    ]
    assert result["fig.pgf"] == members["fig.pgf"]
    assert result["data/table.csv"] == members["data/table.csv"]
    assert result["intro.tex"] == b"Moreover, we study many cases.\n"
    assert "fig.pgf" in page and "不是 TeX 源文件" in page


@pytest.mark.parametrize(
    "name", ["../evil.tex", "/etc/evil.tex", "a/../../evil.tex", "C:/evil.tex"]
)
def test_it_refuses_a_path_that_could_escape(name):
    data = zip_members({"main.tex": b"\\documentclass{article}", name: b"x"})

    with pytest.raises(project.ProjectProblem):
        project.read_project(data)


def test_it_refuses_links_oversized_members_and_non_zips(monkeypatch):
    link = zip_members({"main.tex": b"\\documentclass{article}"}, link="img.png")
    with pytest.raises(project.ProjectProblem):
        project.read_project(link)

    monkeypatch.setattr(project, "MAX_MEMBER_BYTES", 10)
    big = zip_members({"main.tex": b"\\documentclass{article} long enough"})
    with pytest.raises(project.ProjectProblem):
        project.read_project(big)

    with pytest.raises(project.ProjectProblem):
        project.read_project(b"not a zip")


def test_it_refuses_a_project_without_a_main_file():
    data = zip_members({"chapter.tex": b"Just a chapter."})

    with pytest.raises(project.ProjectProblem) as raised:
        project.read_project(data)

    assert "documentclass" in str(raised.value.message)


@pytest.mark.django_db
def test_it_edits_each_file_in_place_and_zips_the_project_back(
    client, model_api, shared_dir
):
    """c03: intro.tex is edited, method.tex (reached only through a macro)
    and every other member come back byte for byte, and the files stay
    separate."""
    user = make_user()
    client.force_login(user)
    data = zip_folder(shared_dir / "academic-cases" / "c03_macro_input")
    upload = SimpleUploadedFile("project.zip", data)

    response = client.post(
        reverse("academic-home"),
        {
            "file": upload,
            "task": "grammar",
            "preset": "journal",
            "model": "deepseek-v3",
            "source_kind": "latex",
        },
    )
    job = run(PolishJob.objects.get())
    page = client.get(job.get_absolute_url()).content.decode()
    download = client.get(reverse("academic-download", args=[job.pk]))

    assert response.status_code == 302
    assert list(PolishFile.objects.values_list("path", flat=True)) == [
        "main.tex",
        "parts/intro.tex",
    ]
    assert "parts/method.tex" in page
    assert download["Content-Type"] == "application/zip"
    original = members_of(data)
    result = members_of(download.content)
    assert result.keys() == original.keys()
    assert result["main.tex"] == original["main.tex"]
    assert result["parts/method.tex"] == original["parts/method.tex"]
    intro = result["parts/intro.tex"].decode()
    assert "Image segmentation is a key step" in intro and "we study" in intro
    assert intro.startswith("\\section{Introduction}\n")


@pytest.mark.django_db
def test_it_refuses_an_unsafe_archive_with_a_clear_message(client, model_api):
    client.force_login(make_user())
    data = zip_members({"main.tex": b"\\documentclass{article}", "../x.tex": b"x"})

    response = client.post(
        reverse("academic-home"),
        {
            "file": SimpleUploadedFile("project.zip", data),
            "task": "polish",
            "preset": "journal",
            "model": "deepseek-v3",
            "source_kind": "latex",
        },
    )

    assert response.status_code == 400
    assert "压缩包中含有不安全的路径：../x.tex" in response.content.decode()
    assert not PolishJob.objects.exists()
