"""The map of a code project: modules, classes, functions, imports and entry
points, with line numbers, worked out by parsers rather than by the model.

Python files are read with the standard library's ast, so the map is exact
for any file Python itself can parse; a file it cannot parse is listed with
its syntax error. C and C++ files are read with tree-sitter's C++ grammar,
which is error-tolerant: a file with macros it does not understand still
yields its includes and most definitions, and nothing is compiled, so a
declaration hidden behind a macro may be missing. Without tree-sitter
installed the C/C++ part falls back to a plain outline (includes, and
function definitions found by a pattern), and the map says which was used.

The map is plain JSON, kept on the analysis row:

    {"modules": [{"path", "language", "name", "lines", "classes",
                  "functions", "imports", "error"}],
     "entry_points": [{"path", "line", "kind", "name"}],
     "edges": [[importer path, imported path], ...],
     "cpp_parser": "tree-sitter" | "outline" | ""}
"""

import ast
import configparser
import logging
import posixpath
import re
import tomllib

from academic import codebase
from academic.codebase import CPP, PYTHON
from chat.prompt import count_text_tokens

logger = logging.getLogger(__name__)

TREE_SITTER = "tree-sitter"
OUTLINE = "outline"

try:
    import tree_sitter
    import tree_sitter_cpp

    CPP_LANGUAGE = tree_sitter.Language(tree_sitter_cpp.language())
except ImportError:  # pragma: no cover - the requirements install it
    CPP_LANGUAGE = None


def build_map(files):
    """The project map of `files` (academic.codebase SourceFile list)."""
    python_names = python_module_names([f.path for f in files if f.language == PYTHON])
    modules = []
    entry_points = []
    cpp_parser = ""
    for source in files:
        if source.language == PYTHON:
            module = python_module(source, python_names.get(source.path, ""))
        elif source.language == CPP:
            module = cpp_module(source)
            cpp_parser = module.pop("parser")
        else:
            continue
        modules.append(module)
        entry_points.extend(module.pop("entry_points"))

    entry_points.extend(declared_scripts(files))
    edges = resolve_imports(modules, python_names)
    return {
        "modules": modules,
        "entry_points": entry_points,
        "edges": edges,
        "cpp_parser": cpp_parser,
    }


# ---------------------------------------------------------------------------
# Python
# ---------------------------------------------------------------------------


def python_module_names(paths):
    """{path: dotted module name}, packages found by their __init__.py.

    A file's package reaches up as long as each folder holds an
    __init__.py, so "src/h11/_util.py" is "h11._util" whatever the
    folders above the package are called.
    """
    present = set(paths)
    names = {}
    for path in paths:
        folder, filename = posixpath.split(path)
        stem = posixpath.splitext(filename)[0]
        parts = [] if stem == "__init__" else [stem]
        while folder and posixpath.join(folder, "__init__.py") in present:
            folder, package = posixpath.split(folder)
            parts.insert(0, package)
        names[path] = ".".join(parts)
    return names


def python_module(source, name):
    module = {
        "path": source.path,
        "language": PYTHON,
        "name": name,
        "lines": len(codebase.text_lines(source.text)),
        "classes": [],
        "functions": [],
        "imports": [],
        "error": "",
        "entry_points": [],
    }
    try:
        tree = ast.parse(source.text, filename=source.path)
    except (SyntaxError, ValueError) as error:
        line = getattr(error, "lineno", None) or 0
        module["error"] = f"line {line}: {getattr(error, 'msg', str(error))}"
        return module

    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            module["classes"].append(_python_class(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            module["functions"].append(_python_function(node))
        elif _is_main_guard(node):
            module["entry_points"].append(
                {"path": source.path, "line": node.lineno, "kind": "main_guard"}
            )
    module["imports"] = _python_imports(tree, name, source.path)
    if posixpath.basename(source.path) == "__main__.py":
        module["entry_points"].append(
            {"path": source.path, "line": 1, "kind": "main_module"}
        )
    return module


def _python_class(node):
    methods = [
        _python_function(item)
        for item in node.body
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    return {
        "name": node.name,
        "line": node.lineno,
        "end_line": node.end_lineno,
        "bases": [ast.unparse(base) for base in node.bases],
        "methods": methods,
    }


def _python_function(node):
    return {"name": node.name, "line": node.lineno, "end_line": node.end_lineno}


def _is_main_guard(node):
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    sides = [node.test.left, *node.test.comparators]
    names = {side.id for side in sides if isinstance(side, ast.Name)}
    texts = {side.value for side in sides if isinstance(side, ast.Constant)}
    return "__name__" in names and "__main__" in texts


def _python_imports(tree, module_name, path):
    """Every import in the file, with the dotted names it could mean."""
    is_package = posixpath.basename(path) == "__init__.py"
    package = module_name if is_package else module_name.rpartition(".")[0]
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imports.append(
                    {"name": alias.name, "line": node.lineno, "candidates": []}
                )
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_base(node, package)
            if base is None:
                continue
            candidates = [f"{base}.{a.name}" if base else a.name for a in node.names]
            imports.append(
                {"name": base, "line": node.lineno, "candidates": candidates}
            )
    imports.sort(key=lambda item: item["line"])
    return imports


def _absolute_base(node, package):
    if not node.level:
        return node.module or ""
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts):
        return None
    base_parts = parts[: len(parts) - (node.level - 1)]
    if node.module:
        base_parts.append(node.module)
    return ".".join(base_parts)


def declared_scripts(files):
    """console_scripts declared in pyproject.toml, setup.cfg or setup.py."""
    scripts = []
    for source in files:
        name = posixpath.basename(source.path)
        if name == "pyproject.toml":
            found = _pyproject_scripts(source.text)
        elif name == "setup.cfg":
            found = _setup_cfg_scripts(source.text)
        elif name == "setup.py":
            found = _setup_py_scripts(source.text)
        else:
            continue
        for script, line in found:
            scripts.append(
                {
                    "path": source.path,
                    "line": line,
                    "kind": "console_script",
                    "name": script,
                }
            )
    return scripts


def _pyproject_scripts(text):
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return []
    table = data.get("project", {}).get("scripts", {})
    return [
        (f"{name} = {target}", _line_of(text, name)) for name, target in table.items()
    ]


def _setup_cfg_scripts(text):
    parser = configparser.ConfigParser()
    try:
        parser.read_string(text)
        value = parser.get("options.entry_points", "console_scripts", fallback="")
    except configparser.Error:
        return []
    lines = [line.strip() for line in value.splitlines() if line.strip()]
    return [(line, _line_of(text, line.split("=")[0].strip())) for line in lines]


def _setup_py_scripts(text):
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    for item in getattr(value, "elts", []):
                        if isinstance(item, ast.Constant):
                            found.append((item.value, item.lineno))
    return found


def _line_of(text, key):
    """The line where `key` is assigned ("key = ..."), else the first line."""
    assignment = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
    for number, line in enumerate(text.splitlines(), start=1):
        if assignment.match(line):
            return number
    return 1


# ---------------------------------------------------------------------------
# C and C++
# ---------------------------------------------------------------------------

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.MULTILINE)
# The outline's guess at a function definition: a name, its parameters, and
# an opening brace on the same or the next line, at the start of a line.
OUTLINE_FUNCTION = re.compile(
    r"^[A-Za-z_][\w:<>,*&\s]*?\b(?P<name>~?[A-Za-z_][\w:]*)\s*\([^;{}()]*\)"
    r"[\w\s:,()]*\s*\{",
    re.MULTILINE,
)
NOT_FUNCTIONS = {"if", "for", "while", "switch", "return", "sizeof", "catch"}


def cpp_module(source):
    module = {
        "path": source.path,
        "language": CPP,
        "name": source.path,
        "lines": len(codebase.text_lines(source.text)),
        "classes": [],
        "functions": [],
        "imports": [],
        "error": "",
        "entry_points": [],
    }
    if CPP_LANGUAGE is not None:
        _tree_sitter_outline(source, module)
        module["parser"] = TREE_SITTER
    else:
        _plain_outline(source, module)
        module["parser"] = OUTLINE
    for function in module["functions"]:
        if function["name"] == "main":
            module["entry_points"].append(
                {"path": source.path, "line": function["line"], "kind": "main_function"}
            )
    return module


def _tree_sitter_outline(source, module):
    data = source.text.encode("utf-8")
    tree = tree_sitter.Parser(CPP_LANGUAGE).parse(data)
    _visit_cpp(tree.root_node, module, data)
    if tree.root_node.has_error:
        # Usually a macro the grammar cannot expand; the outline is still
        # kept, but the page should not present it as complete.
        module["error"] = "partly unparsed (macros or syntax the grammar skips)"


CPP_CONTAINERS = {
    "namespace_definition",
    "linkage_specification",
    "template_declaration",
    "declaration_list",
    "preproc_if",
    "preproc_ifdef",
    "preproc_else",
    "preproc_elif",
}


def _visit_cpp(node, module, data):
    for child in node.named_children:
        kind = child.type
        if kind == "preproc_include":
            _add_include(child, module, data)
        elif kind in ("class_specifier", "struct_specifier"):
            _add_cpp_class(child, module, data)
        elif kind == "function_definition":
            module["functions"].append(_cpp_function(child, data))
        elif kind in ("declaration", "field_declaration", "type_definition"):
            # `class A {...};` and `typedef struct {...} B;` nest the type.
            for part in child.named_children:
                if part.type in ("class_specifier", "struct_specifier"):
                    _add_cpp_class(part, module, data)
        elif kind in CPP_CONTAINERS:
            _visit_cpp(child, module, data)


def _text(node, data):
    return data[node.start_byte : node.end_byte].decode("utf-8", "replace")


def _add_include(node, module, data):
    path = node.child_by_field_name("path")
    if path is None:
        return
    raw = _text(path, data)
    module["imports"].append(
        {
            "name": raw.strip('<>"'),
            "line": node.start_point[0] + 1,
            "system": raw.startswith("<"),
        }
    )


def _add_cpp_class(node, module, data):
    name = node.child_by_field_name("name")
    body = node.child_by_field_name("body")
    if name is None or body is None:
        # A forward declaration or an anonymous type: nothing to map.
        return
    methods = []
    for member in body.named_children:
        target = member
        if member.type == "template_declaration":
            target = next(
                (c for c in member.named_children if c.type == "function_definition"),
                member,
            )
        if target.type == "function_definition":
            methods.append(_cpp_function(target, data))
    module["classes"].append(
        {
            "name": _text(name, data),
            "line": node.start_point[0] + 1,
            "end_line": node.end_point[0] + 1,
            # C++ base classes are not read: the map shows the class and
            # its methods only, and the model reads the bases in the source.
            "bases": [],
            "methods": methods,
        }
    )


def _cpp_function(node, data):
    declarator = node.child_by_field_name("declarator")
    # Pointers, references and the like wrap the function declarator.
    while declarator is not None and declarator.type != "function_declarator":
        # A reference declarator holds its inner declarator unnamed.
        declarator = declarator.child_by_field_name("declarator") or next(
            iter(declarator.named_children), None
        )
    if declarator is not None and declarator.child_by_field_name("declarator"):
        name = _text(declarator.child_by_field_name("declarator"), data)
    else:
        # A conversion operator ("operator T*() const") has no function
        # declarator; its name is what comes before the parameters.
        outer = node.child_by_field_name("declarator")
        name = _text(outer, data).split("(")[0] if outer is not None else "?"
    return {
        "name": " ".join(name.split()),
        "line": node.start_point[0] + 1,
        "end_line": node.end_point[0] + 1,
    }


def _plain_outline(source, module):
    text = source.text
    for match in INCLUDE.finditer(text):
        module["imports"].append(
            {
                "name": match[2],
                "line": text.count("\n", 0, match.start()) + 1,
                "system": match[1] == "<",
            }
        )
    for match in OUTLINE_FUNCTION.finditer(text):
        name = match["name"]
        if name.split("::")[-1] in NOT_FUNCTIONS:
            continue
        line = text.count("\n", 0, match.start()) + 1
        module["functions"].append({"name": name, "line": line, "end_line": line})


# ---------------------------------------------------------------------------
# Imports between the project's own files
# ---------------------------------------------------------------------------


def resolve_imports(modules, python_names):
    """Each import's `target` (a project path, or None), and the edges."""
    path_by_name = {name: path for path, name in python_names.items() if name}
    cpp_paths = [m["path"] for m in modules if m["language"] == CPP]
    edges = set()
    for module in modules:
        for item in module["imports"]:
            if module["language"] == PYTHON:
                item["target"] = _python_target(item, path_by_name)
            else:
                item["target"] = _cpp_target(item, module["path"], cpp_paths)
            if item["target"] and item["target"] != module["path"]:
                edges.add((module["path"], item["target"]))
    return sorted([list(edge) for edge in edges])


def _python_target(item, path_by_name):
    for candidate in [*item.get("candidates", []), item["name"]]:
        parts = candidate.split(".")
        # "import a.b.c" may name a module a.b with an attribute c.
        for end in range(len(parts), 0, -1):
            path = path_by_name.get(".".join(parts[:end]))
            if path:
                return path
    return None


def _cpp_target(item, including_path, cpp_paths):
    # As a compiler would look: beside the including file, then anywhere
    # in the project whose path ends with the included name.
    beside = posixpath.normpath(
        posixpath.join(posixpath.dirname(including_path), item["name"])
    )
    if beside in cpp_paths:
        return beside
    suffix = "/" + item["name"]
    for path in cpp_paths:
        if path == item["name"] or path.endswith(suffix):
            return path
    return None


# ---------------------------------------------------------------------------
# The map as text, for the model
# ---------------------------------------------------------------------------


def module_text(module):
    """One module's part of the map, with path:line references."""
    path = module["path"]
    title = f"{path} ({module['lines']} lines"
    if module["language"] == PYTHON and module["name"]:
        title += f", module {module['name']}"
    lines = [title + ")"]
    if module["error"]:
        lines.append(f"  parse problem: {module['error']}")
    internal = [i["target"] for i in module["imports"] if i.get("target")]
    external = [i["name"] for i in module["imports"] if not i.get("target")]
    if internal:
        lines.append("  imports project files: " + ", ".join(dict.fromkeys(internal)))
    if external:
        lines.append("  imports: " + ", ".join(dict.fromkeys(external)))
    for cls in module["classes"]:
        methods = ", ".join(f"{m['name']} {path}:{m['line']}" for m in cls["methods"])
        bases = f"({', '.join(cls['bases'])})" if cls["bases"] else ""
        lines.append(
            f"  class {cls['name']}{bases} {path}:{cls['line']}"
            + (f"; methods: {methods}" if methods else "")
        )
    for function in module["functions"]:
        lines.append(f"  function {function['name']} {path}:{function['line']}")
    return "\n".join(lines)


def entry_point_text(entry):
    described = entry["kind"].replace("_", " ")
    name = f" {entry['name']}" if entry.get("name") else ""
    return f"- {described}{name} at {entry['path']}:{entry['line']}"


def map_text(project_map, budget):
    """The map as text within `budget` estimated tokens.

    Entry points come first, then modules in path order; when the budget
    runs out the remaining modules are named as left out, so that the
    model knows the map is partial.
    """
    parts = ["Entry points:"]
    parts += [entry_point_text(e) for e in project_map["entry_points"]] or ["- none"]
    parts.append("Files:")
    used = count_text_tokens("\n".join(parts))
    modules = project_map["modules"]
    for index, module in enumerate(modules):
        text = module_text(module)
        cost = count_text_tokens(text) + 1
        if used + cost > budget:
            left = len(modules) - index
            parts.append(f"({left} more files not listed here for space)")
            break
        parts.append(text)
        used += cost
    return "\n".join(parts)


def map_for_file(project_map, path, budget):
    """The map's entry for one file within `budget` tokens, or "" if it has
    none (a build file). A long entry keeps its first lines and says how
    many were left out."""
    module = next((m for m in project_map["modules"] if m["path"] == path), None)
    if module is None:
        return ""
    lines = module_text(module).split("\n")
    kept = []
    used = 0
    for index, line in enumerate(lines):
        cost = count_text_tokens(line) + 1
        if used + cost > budget - 16:
            kept.append(f"  ({len(lines) - index} more lines of the map left out)")
            break
        kept.append(line)
        used += cost
    return "\n".join(kept)
