"""Hiding everything in a LaTeX source that is not prose, so that a model can
polish or translate the prose without breaking the document.

Two passes. A small scanner first finds what derails a LaTeX parser: macro
definitions (`\\newcommand{\\be}{\\begin{equation}}` opens an environment that
never closes), verbatim text and `\\verb`, and brace-less `\\input name`. These
are protected whole and blanked out for the second pass, in which pylatexenc
parses the rest with exact positions. Math, comments, keys, file names, URLs
and environment markers are protected; the arguments of text macros such as
`\\emph{}`, `\\footnote{}` and `\\section{}` stay editable prose.
"""

import functools
import logging
import re

from pylatexenc import latexwalker
from pylatexenc.macrospec import MacroSpec

from academic.placeholders import mask_spans

logger = logging.getLogger(__name__)

# Argument roles, one letter per argument of the spec: "w" is walked as
# prose (its brackets are protected), "x" is protected whole.
PROSE_MACROS = {
    **dict.fromkeys(
        [
            "textbf",
            "textit",
            "textsl",
            "textsc",
            "textsf",
            "textrm",
            "textup",
            "textmd",
            "textnormal",
            "emph",
            "underline",
            "uline",
            "sout",
            "hl",
            "mbox",
            "fbox",
            "enquote",
            "thanks",
            "abstract",
            "marginpar",
            "footnotetext",
        ],
        ("{", "w"),
    ),
    **dict.fromkeys(
        [
            "part",
            "chapter",
            "section",
            "subsection",
            "subsubsection",
            "paragraph",
            "subparagraph",
            "caption",
        ],
        ("*[{", "xww"),
    ),
    "title": ("[{", "ww"),
    "subtitle": ("{", "w"),
    "footnote": ("[{", "xw"),
    "subcaption": ("[{", "ww"),
    "subcaptionbox": ("[{", "ww"),
    "item": ("[", "w"),
    "textcolor": ("[{{", "xxw"),
    "colorbox": ("[{{", "xxw"),
    "href": ("[{{", "xxw"),
}

# Citation commands keep their keys protected; their optional notes ("see",
# "p.~12") are prose and may be translated.
CITATION_MACROS = [
    "cite",
    "citep",
    "citet",
    "citealp",
    "citealt",
    "citeauthor",
    "citeyear",
    "citen",
    "parencite",
    "textcite",
    "autocite",
    "footcite",
    "supercite",
]

# Commands protected with all their arguments, beyond pylatexenc's own list.
PROTECTED_MACROS = {
    **dict.fromkeys(
        [
            "ref",
            "eqref",
            "autoref",
            "cref",
            "Cref",
            "pageref",
            "nameref",
            "vref",
            "Vref",
            "label",
            "nocite",
            "bibitem",
        ],
        "*[{",
    ),
    **dict.fromkeys(
        [
            "input",
            "include",
            "includeonly",
            "subfile",
            "url",
            "nolinkurl",
            "path",
            "email",
            "keywords",
            "author",
            "affiliation",
            "affil",
            "address",
            "inst",
            "orcid",
            "texttt",
            "cs",
            "env",
            "pkg",
            "file",
            "num",
            "si",
            "bibliography",
            "bibliographystyle",
            "addbibresource",
            "graphicspath",
            "lstset",
            "sisetup",
            "pgfplotsset",
            "hypersetup",
            "captionsetup",
            "thusetup",
            "linespread",
        ],
        "[{",
    ),
    "SI": "[{{",
    "includegraphics": "*[{",
    "lstinputlisting": "[{",
    "patchcmd": "{{{{{",
    "apptocmd": "{{{{",
    "pretocmd": "{{{{",
    "setlength": "{{",
    "addtolength": "{{",
    "setcounter": "{{",
    "numberwithin": "{{",
    "newcolumntype": "{[{",
}

# Environments protected whole: math, pictures, code and bibliographies.
OPAQUE_ENVIRONMENTS = {
    "equation",
    "align",
    "alignat",
    "flalign",
    "gather",
    "multline",
    "eqnarray",
    "math",
    "displaymath",
    "split",
    "tikzpicture",
    "pgfpicture",
    "thebibliography",
    "filecontents",
}

VERBATIM_ENVIRONMENTS = (
    "verbatim",
    "Verbatim",
    "BVerbatim",
    "LVerbatim",
    "lstlisting",
    "minted",
    "comment",
    "alltt",
)

# Specials that are LaTeX syntax rather than typography.
PROSE_SPECIALS = {"``", "''", "`", "'", "--", "---", "!`", "?`"}

# How each definition command's arguments read: "N" the defined name (`\x`
# or `{\x}`), "{" a braced group, "[" an optional bracket, "*" an optional
# star, "P" a \def parameter text, "T" one token (the right side of \let).
DEFINITION_FORMS = {
    **dict.fromkeys(
        ["newcommand", "renewcommand", "providecommand", "DeclareRobustCommand"],
        "*N[[{",
    ),
    **dict.fromkeys(
        [
            "NewDocumentCommand",
            "RenewDocumentCommand",
            "ProvideDocumentCommand",
            "DeclareDocumentCommand",
        ],
        "N{{",
    ),
    **dict.fromkeys(["newenvironment", "renewenvironment"], "*{[[{{"),
    **dict.fromkeys(["NewDocumentEnvironment", "RenewDocumentEnvironment"], "{{{{"),
    "DeclareMathOperator": "*N{",
    "newtheorem": "*{[{[",
    **dict.fromkeys(["def", "gdef", "edef", "xdef"], "NP{"),
    "let": "NT",
}

SCANNER_TOKEN = re.compile(r"%|\\(?:[A-Za-z@]+\*?|.)", re.DOTALL)
VERBATIM_BEGIN = re.compile(
    r"\\begin\s*\{(" + "|".join(VERBATIM_ENVIRONMENTS) + r")(\*?)\}"
)
BARE_INPUT = re.compile(r"\\(?:input|include)[ \t]+([^\s{}%]+)")
ENVIRONMENT_BEGIN = re.compile(r"\\begin\s*\{[^{}]*\}")
ENVIRONMENT_END = re.compile(r"\\end\s*\{[^{}]*\}")
SINGLE_ASCII_WORD = re.compile(r"[\x21-\x7e]*")
# A blank stands in for each protected character during parsing; it cannot
# extend a macro name or open a group, and keeps every position the same.
BLANK = "0"


def mask_latex(source):
    """A MaskedText of `source` in which only prose is left for the model."""
    opaque_spans = _scan_opaque_spans(source)
    blanked = _blank_out(source, opaque_spans)

    try:
        spans = _ParsedSpans(blanked).collect()
    except Exception:
        # pylatexenc still raises on some inputs in tolerant mode (IndexError
        # included); protect everything rather than send LaTeX it could not
        # read to the model.
        logger.warning("LaTeX could not be parsed; the whole text is protected")
        spans = [(0, len(source))]

    return mask_spans(source, opaque_spans + spans)


def _blank_out(source, spans):
    characters = list(source)
    for start, end in spans:
        characters[start:end] = BLANK * (end - start)
    return "".join(characters)


# First pass: definitions, verbatim and brace-less inputs.


def _scan_opaque_spans(source):
    spans = []
    position = 0
    while True:
        token = SCANNER_TOKEN.search(source, position)
        if token is None:
            return spans

        end = _opaque_end(source, token)
        if end is None:
            position = token.end()
        elif token.group() == "%":
            # Comments are the parser's business; skipping them here keeps a
            # commented-out definition from being read as a real one.
            position = end
        else:
            spans.append((token.start(), end))
            position = end


def _opaque_end(source, token):
    text = token.group()
    if text == "%":
        return _line_end(source, token.end())

    name = text[1:].rstrip("*")
    if name == "verb":
        return _verb_end(source, token.end())
    if name == "begin":
        return _verbatim_end(source, token.start())
    if name in ("input", "include"):
        bare = BARE_INPUT.match(source, token.start())
        return bare.end() if bare else None
    if name in DEFINITION_FORMS:
        form = DEFINITION_FORMS[name]
        if text.endswith("*"):
            form = form.lstrip("*")
        return _definition_end(source, token.end(), form)
    return None


def _line_end(source, position):
    newline = source.find("\n", position)
    return len(source) if newline == -1 else newline


def _verb_end(source, position):
    if position >= len(source):
        return position
    delimiter = source[position]
    closing = source.find(delimiter, position + 1)
    if closing == -1 or "\n" in source[position:closing]:
        return _line_end(source, position)
    return closing + 1


def _verbatim_end(source, position):
    begin = VERBATIM_BEGIN.match(source, position)
    if begin is None:
        return None
    end_marker = re.compile(
        r"\\end\s*\{" + re.escape(begin.group(1) + begin.group(2)) + r"\}"
    )
    end = end_marker.search(source, begin.end())
    return len(source) if end is None else end.end()


def _definition_end(source, position, form):
    for part in form:
        start = _skip_spaces(source, position)
        end = _definition_part_end(source, start, part)
        if end is None:
            if part in "*[":
                continue
            # A definition that does not parse is protected to the end of
            # its line, which keeps its stray braces away from the parser.
            return max(position, _line_end(source, start))
        position = end
    return position


def _definition_part_end(source, start, part):
    at = source[start : start + 1]
    if part == "*":
        return start + 1 if at == "*" else None
    if part == "[":
        return _bracket_end(source, start) if at == "[" else None
    if part == "{":
        return _group_end(source, start) if at == "{" else None
    if part == "N":
        if at == "{":
            return _group_end(source, start)
        name = re.compile(r"\\(?:[A-Za-z@]+|.)").match(source, start)
        return name.end() if name else None
    if part == "P":
        brace = source.find("{", start)
        return None if brace == -1 else brace
    if part == "T":
        if at == "=":
            start = _skip_spaces(source, start + 1)
        token = re.compile(r"\\(?:[A-Za-z@]+|.)|.", re.DOTALL).match(source, start)
        return token.end() if token else None
    raise ValueError(part)


def _skip_spaces(source, position):
    while position < len(source) and source[position] in " \t\n":
        position += 1
    return position


def _group_end(source, start):
    """The position after the brace closing the group opened at `start`."""
    depth = 0
    position = start
    while position < len(source):
        character = source[position]
        if character == "\\":
            position += 2
            continue
        if character == "%":
            position = _line_end(source, position)
            continue
        if character == "{":
            depth += 1
        elif character == "}":
            depth -= 1
            if depth == 0:
                return position + 1
        position += 1
    return None


def _bracket_end(source, start):
    closing = source.find("]", start)
    return None if closing == -1 else closing + 1


# Second pass: the parsed document.


@functools.cache
def _context_db():
    context = latexwalker.get_default_latex_context_db()
    specs = [MacroSpec(name, spec) for name, (spec, _roles) in PROSE_MACROS.items()]
    specs += [MacroSpec(name, "*[[{") for name in CITATION_MACROS]
    specs += [MacroSpec(name, spec) for name, spec in PROTECTED_MACROS.items()]
    # Prepended, so that these argument specs win over pylatexenc's own.
    context.add_context_category("academic", macros=specs, prepend=True)
    return context


class _ParsedSpans:
    """The protected spans pylatexenc's parse of a (blanked) source yields."""

    def __init__(self, source):
        self.source = source
        self.spans = []

    def collect(self):
        walker = latexwalker.LatexWalker(
            self.source, latex_context=_context_db(), tolerant_parsing=True
        )
        nodes, _position, _length = walker.get_latex_nodes()
        self._walk(nodes)
        return self.spans

    def _protect(self, start, end):
        self.spans.append((start, end))

    def _walk(self, nodes):
        # An unknown macro's arguments reach the parse as groups after it.
        argument_owner = None
        for node in nodes:
            if node is None:
                continue
            if argument_owner and _is_brace_group(node):
                self._walk_argument_group(node)
                continue

            argument_owner = None
            if node.isNodeType(latexwalker.LatexMacroNode):
                argument_owner = self._walk_macro(node)
            else:
                self._walk_node(node)

    def _walk_node(self, node):
        if node.isNodeType(latexwalker.LatexCommentNode):
            self._protect(node.pos, node.pos + node.len - len(node.comment_post_space))
        elif node.isNodeType(latexwalker.LatexMathNode):
            self._protect(node.pos, node.pos + node.len)
        elif node.isNodeType(latexwalker.LatexSpecialsNode):
            if node.specials_chars not in PROSE_SPECIALS:
                self._protect(node.pos, node.pos + node.len)
        elif node.isNodeType(latexwalker.LatexGroupNode):
            self._walk_group(node)
        elif node.isNodeType(latexwalker.LatexEnvironmentNode):
            self._walk_environment(node)

    def _walk_group(self, node):
        opening, closing = node.delimiters
        end = node.pos + node.len
        self._protect(node.pos, node.pos + len(opening))
        if self.source.endswith(closing, node.pos, end):
            self._protect(end - len(closing), end)
        self._walk(node.nodelist)

    def _walk_argument_group(self, node):
        # A single ASCII word after an unknown macro (\pkg{subcaption},
        # \inst{2}) is a name, not prose; a phrase (\revise{...}) is prose.
        content = self.source[node.pos + 1 : node.pos + node.len - 1]
        if SINGLE_ASCII_WORD.fullmatch(content):
            self._protect(node.pos, node.pos + node.len)
        else:
            self._walk_group(node)

    def _walk_macro(self, node):
        """Protect a macro; return its name if groups after it are its arguments."""
        name = node.macroname
        end = node.pos + node.len - len(node.macro_post_space)
        arguments = node.nodeargd.argnlist if node.nodeargd else []

        if name in PROSE_MACROS:
            self._walk_arguments(node, arguments, PROSE_MACROS[name][1])
        elif name in CITATION_MACROS:
            self._walk_arguments(node, arguments, "xwwx")
        elif any(argument is not None for argument in arguments):
            self._protect(node.pos, end)
        else:
            self._protect(node.pos, end)
            return name
        return None

    def _walk_arguments(self, node, arguments, roles):
        self._protect(node.pos, node.pos + 1 + len(node.macroname))
        for argument, role in zip(arguments, roles):
            if argument is None:
                continue
            if role == "w" and argument.isNodeType(latexwalker.LatexGroupNode):
                self._walk_group(argument)
            else:
                self._protect(argument.pos, argument.pos + argument.len)

    def _walk_environment(self, node):
        start = node.pos
        end = node.pos + node.len
        name = node.environmentname.rstrip("*")
        if name in OPAQUE_ENVIRONMENTS:
            self._protect(start, end)
            return

        self._protect(start, self._begin_end(node))
        closing = self._end_marker_start(node)
        if closing is not None:
            self._protect(closing, end)
        self._walk(node.nodelist)

    def _begin_end(self, node):
        """Where `\\begin{name}` and the arguments right after it end."""
        begin = ENVIRONMENT_BEGIN.match(self.source, node.pos)
        position = begin.end() if begin else node.pos + 1
        arguments = node.nodeargd.argnlist if node.nodeargd else []
        for argument in arguments:
            if argument is not None:
                position = max(position, argument.pos + argument.len)

        # Environments pylatexenc does not know (longtable{cccc},
        # threeparttable[c]) leave their arguments in the body.
        while self.source[position : position + 1] in ("[", "{"):
            if self.source[position] == "{":
                after = _group_end(self.source, position)
            else:
                after = _bracket_end(self.source, position)
            if after is None:
                break
            position = after
        return position

    def _end_marker_start(self, node):
        end = node.pos + node.len
        closing = self.source.rfind("\\end", node.pos, end)
        if closing == -1:
            return None
        marker = ENVIRONMENT_END.match(self.source, closing)
        if marker is None or marker.end() != end:
            return None
        return closing


def _is_brace_group(node):
    return (
        node.isNodeType(latexwalker.LatexGroupNode)
        and node.delimiters[0] == "{"
        and node.pos + node.len > node.pos + 1
    )
