"""The diagram of a project's files and their imports, as an SVG the server
writes: a layered layout, importers above what they import.

A file's layer is the length of the longest chain of imports below it, so
files that import nothing of the project sit at the bottom. Cycles (which
Python allows) are broken by ignoring the import that closes them. Labels
are escaped; every box links to the file's source view. Only files with an
import edge are drawn beyond MAX_NODES, and at most MAX_NODES of them: a
project larger than that gets a partial diagram, which the page says.
"""

from collections import defaultdict

from django.utils.html import escape

MAX_NODES = 60
CHAR_WIDTH = 7
BOX_HEIGHT = 26
BOX_PADDING = 10
ROW_GAP = 60
COLUMN_GAP = 16
MARGIN = 12


def layers(nodes, edges):
    """{node: layer}, 0 for files that import no other drawn file."""
    below = defaultdict(list)
    for importer, imported in edges:
        below[importer].append(imported)
    depth = {}
    visiting = set()

    def depth_of(node):
        if node in depth:
            return depth[node]
        if node in visiting:
            return 0
        visiting.add(node)
        deepest = max((depth_of(child) + 1 for child in below[node]), default=0)
        visiting.discard(node)
        depth[node] = deepest
        return deepest

    for node in nodes:
        depth_of(node)
    return depth


def chosen_nodes(project_map):
    """The files to draw, and whether some were left out."""
    paths = [module["path"] for module in project_map["modules"]]
    if len(paths) <= MAX_NODES:
        return paths, False
    linked = {path for edge in project_map["edges"] for path in edge}
    kept = [path for path in paths if path in linked][:MAX_NODES]
    return kept, True


def render_svg(project_map, link_for):
    """(svg markup, partial) for the map; `link_for(path)` gives each box's URL."""
    nodes, partial = chosen_nodes(project_map)
    drawn = set(nodes)
    edges = [(a, b) for a, b in project_map["edges"] if a in drawn and b in drawn]
    depth = layers(nodes, edges)
    rows = defaultdict(list)
    for node in nodes:
        rows[depth[node]].append(node)

    boxes = _place(rows)
    width = max((x + w for x, _y, w in boxes.values()), default=0) + MARGIN
    height = max((y for _x, y, _w in boxes.values()), default=0) + BOX_HEIGHT + MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="code-diagram" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" data-code-diagram>',
        '<defs><marker id="code-arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#667"/></marker></defs>',
    ]
    for importer, imported in edges:
        parts.append(_edge(boxes[importer], boxes[imported], importer, imported))
    for node in nodes:
        parts.append(_box(node, boxes[node], link_for(node)))
    parts.append("</svg>")
    return "".join(parts), partial


def _place(rows):
    """{node: (x, y, width)}, the deepest layer on top."""
    boxes = {}
    top = max(rows, default=0)
    for layer, nodes in rows.items():
        y = MARGIN + (top - layer) * (BOX_HEIGHT + ROW_GAP)
        x = MARGIN
        for node in sorted(nodes):
            width = len(node) * CHAR_WIDTH + 2 * BOX_PADDING
            boxes[node] = (x, y, width)
            x += width + COLUMN_GAP
    return boxes


def _edge(source, target, importer, imported):
    sx, sy, sw = source
    tx, ty, tw = target
    x1, x2 = sx + sw / 2, tx + tw / 2
    # From the importer's lower edge to the imported file's upper edge, or
    # the other way round when a cycle puts the imported file above.
    if sy < ty:
        y1, y2 = sy + BOX_HEIGHT, ty
    elif sy > ty:
        y1, y2 = sy, ty + BOX_HEIGHT
    else:
        y1 = y2 = sy + BOX_HEIGHT / 2
    title = escape(f"{importer} → {imported}")
    return (
        f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" '
        f'stroke="#99a" stroke-width="1" marker-end="url(#code-arrow)" '
        f'data-edge="{title}"><title>{title}</title></line>'
    )


def _box(node, box, url):
    x, y, width = box
    label = escape(node)
    return (
        f'<a href="{escape(url)}" data-node="{label}">'
        f'<rect x="{x}" y="{y}" width="{width}" height="{BOX_HEIGHT}" rx="4" '
        f'fill="#eef2fb" stroke="#557"/>'
        f'<text x="{x + BOX_PADDING}" y="{y + 17}" font-family="monospace" '
        f'font-size="12" fill="#223">{label}</text></a>'
    )
