"""The project map: exact for Python through ast, an outline for C++, and
the import diagram drawn from it."""

import re

from academic import codebase, codediagram, codemap
from academic.codebase import SourceFile
from tests.academic.codeprojects import greenlet_zip, h11_zip, make_zip

PACKAGE = {
    "pyproject.toml": (
        '[project]\nname = "tally"\n\n[project.scripts]\ntally = "tally.cli:main"\n'
    ),
    "src/tally/__init__.py": "from .core import Counter\n",
    "src/tally/core.py": (
        "import json\n"
        "from . import util\n"
        "\n"
        "\n"
        "class Counter(dict):\n"
        "    def add(self, key):\n"
        "        self[key] = self.get(key, 0) + 1\n"
        "\n"
        "    async def dump(self):\n"
        "        return json.dumps(self)\n"
        "\n"
        "\n"
        "def merge(a, b):\n"
        "    return util.combine(a, b)\n"
    ),
    "src/tally/util.py": "def combine(a, b):\n    return {**a, **b}\n",
    "src/tally/cli.py": (
        "import sys\n"
        "from tally.core import Counter, merge\n"
        "\n"
        "def main():\n"
        "    print(Counter())\n"
        "\n"
        'if __name__ == "__main__":\n'
        "    main()\n"
    ),
    "src/tally/broken.py": "def oops(:\n",
}


def build(members):
    return codemap.build_map(codebase.read_upload("p.zip", make_zip(members)).files)


def module(project_map, path):
    return next(m for m in project_map["modules"] if m["path"] == path)


def test_it_maps_a_python_package_exactly():
    project_map = build(PACKAGE)

    core = module(project_map, "src/tally/core.py")
    assert core["name"] == "tally.core"
    assert core["classes"] == [
        {
            "name": "Counter",
            "line": 5,
            "end_line": 10,
            "bases": ["dict"],
            "methods": [
                {"name": "add", "line": 6, "end_line": 7},
                {"name": "dump", "line": 9, "end_line": 10},
            ],
        }
    ]
    assert core["functions"] == [{"name": "merge", "line": 13, "end_line": 14}]
    assert [(i["name"], i["line"], i["target"]) for i in core["imports"]] == [
        ("json", 1, None),
        ("tally", 2, "src/tally/util.py"),
    ]
    assert project_map["edges"] == [
        ["src/tally/__init__.py", "src/tally/core.py"],
        ["src/tally/cli.py", "src/tally/core.py"],
        ["src/tally/core.py", "src/tally/util.py"],
    ]


def test_it_finds_the_entry_points():
    project_map = build(PACKAGE)

    assert project_map["entry_points"] == [
        {"path": "src/tally/cli.py", "line": 7, "kind": "main_guard"},
        {
            "path": "pyproject.toml",
            "line": 5,
            "kind": "console_script",
            "name": "tally = tally.cli:main",
        },
    ]


def test_it_lists_a_file_python_cannot_parse_with_its_error():
    broken = module(build(PACKAGE), "src/tally/broken.py")

    assert broken["error"].startswith("line 1:")
    assert broken["functions"] == []


def test_it_reads_console_scripts_from_setup_cfg():
    members = {
        "setup.cfg": "[options.entry_points]\nconsole_scripts =\n    hello = a.b:run\n",
        "a/__init__.py": "",
        "a/b.py": "def run():\n    pass\n",
    }

    (entry,) = build(members)["entry_points"]

    assert entry == {
        "path": "setup.cfg",
        "line": 3,
        "kind": "console_script",
        "name": "hello = a.b:run",
    }


def test_it_maps_every_top_level_definition_of_h11():
    """Checked against the files' own text, independently of ast."""
    files = codebase.read_upload("h11.zip", h11_zip()).files
    project_map = codemap.build_map(files)
    texts = {source.path: source.text for source in files}

    for entry in project_map["modules"]:
        lines = texts[entry["path"]].split("\n")
        expected = [
            (match[2], number)
            for number, line in enumerate(lines, start=1)
            if (match := re.match(r"(class|def) (\w+)", line))
        ]
        found = [(c["name"], c["line"]) for c in entry["classes"]]
        found += [(f["name"], f["line"]) for f in entry["functions"]]
        assert sorted(found, key=lambda item: item[1]) == expected, entry["path"]
    connection = module(project_map, "h11/_connection.py")
    assert ["h11/_connection.py", "h11/_events.py"] in project_map["edges"]
    assert connection["name"] == "h11._connection"


def test_it_outlines_cpp_with_tree_sitter():
    source = SourceFile(
        "src/app.cpp",
        "cpp",
        '#include <vector>\n#include "util.h"\n\nnamespace app {\n'
        "class Runner {\n public:\n  int run(int n) { return n; }\n};\n"
        "int helper(int x) {\n  return x;\n}\n}  // namespace app\n\n"
        "int main() {\n  return app::helper(0);\n}\n",
    )
    header = SourceFile("src/util.h", "cpp", "int helper(int x);\n")

    project_map = codemap.build_map([source, header])

    app = module(project_map, "src/app.cpp")
    assert project_map["cpp_parser"] == "tree-sitter"
    assert app["classes"] == [
        {
            "name": "Runner",
            "line": 5,
            "end_line": 8,
            "bases": [],
            "methods": [{"name": "run", "line": 7, "end_line": 7}],
        }
    ]
    assert [(f["name"], f["line"]) for f in app["functions"]] == [
        ("helper", 9),
        ("main", 14),
    ]
    assert [(i["name"], i["system"], i["target"]) for i in app["imports"]] == [
        ("vector", True, None),
        ("util.h", False, "src/util.h"),
    ]
    assert project_map["entry_points"] == [
        {"path": "src/app.cpp", "line": 14, "kind": "main_function"}
    ]


def test_it_resolves_greenlet_includes_to_its_own_headers():
    code_project = codebase.read_upload("greenlet.zip", greenlet_zip())
    project_map = codemap.build_map(code_project.files)
    paths = {source.path for source in code_project.files}

    for source in code_project.files:
        for included in re.findall(r'^#\s*include\s+"([^"]+)"', source.text, re.M):
            target = f"greenlet/{included}"
            if target in paths:
                assert [source.path, target] in project_map["edges"]
    tgreenlet = module(project_map, "greenlet/TGreenlet.cpp")
    names = [f["name"] for f in tgreenlet["functions"]]
    # Defined returning a reference: the name sits one declarator deeper.
    assert "operator<<=" in names
    assert all(f["name"] != "?" for m in project_map["modules"] for f in m["functions"])


def test_it_falls_back_to_a_plain_outline_without_tree_sitter(monkeypatch):
    monkeypatch.setattr(codemap, "CPP_LANGUAGE", None)
    source = SourceFile(
        "m.c",
        "cpp",
        '#include "m.h"\nstatic int add(int a, int b)\n{\n  return a + b;\n}\n',
    )

    project_map = codemap.build_map([source])

    (entry,) = project_map["modules"]
    assert project_map["cpp_parser"] == "outline"
    assert [(f["name"], f["line"]) for f in entry["functions"]] == [("add", 2)]
    assert entry["imports"][0]["name"] == "m.h"


def test_it_cuts_the_map_text_to_its_budget_and_says_so():
    project_map = codemap.build_map(codebase.read_upload("h11.zip", h11_zip()).files)

    text = codemap.map_text(project_map, 300)

    assert codemap.count_text_tokens(text) <= 300
    assert re.search(r"\(\d+ more files not listed here for space\)", text)


def test_it_draws_the_imports_with_escaped_labels():
    members = {"a<b>.py": "import c\n", "c.py": "x = 1\n"}
    project_map = build(members)

    svg, partial = codediagram.render_svg(project_map, lambda path: f"/s/{path}")

    assert not partial
    assert "a&lt;b&gt;.py" in svg and "a<b>" not in svg
    assert svg.count("<line ") == 1 and svg.count("<rect ") == 2
    # The importer is drawn above what it imports.
    importer_y = int(
        re.search(r'data-node="a&lt;b&gt;.py"><rect x="\d+" y="(\d+)"', svg)[1]
    )
    imported_y = int(re.search(r'data-node="c.py"><rect x="\d+" y="(\d+)"', svg)[1])
    assert importer_y < imported_y


def test_it_cuts_one_files_map_to_its_budget():
    project_map = codemap.build_map(codebase.read_upload("h11.zip", h11_zip()).files)

    text = codemap.map_for_file(project_map, "h11/_connection.py", 120)

    assert text.startswith("h11/_connection.py (")
    assert codemap.count_text_tokens(text) <= 120
    assert re.search(r"\(\d+ more lines of the map left out\)$", text)
