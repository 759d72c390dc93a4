"""Server-rendered SVG charts of the overcommit page (no script, no network).

``density(row)``: one node's physical size, what it sold and what its VEs used
(p95 and peak of the hourly totals) for RAM, CPU and disk, as bars on one scale
per resource. ``fleet(rows)``: every node's headroom at its risk level as a
share of physical, least first, so the fullest nodes are on top.
"""

from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

from .templatetags.report_format import iec

BAR, GAP, LABEL, WIDTH = 14, 4, 92, 560  # px: bar height, gap, label column, chart width
BARS = (("physical", "#64748b"), ("sold", "#2563eb"), ("p95", "#16a34a"), ("peak", "#ea580c"))
RESOURCES = (("RAM", "ram", iec), ("CPU", "cpu", lambda v: f"{v:.2f} CPUs"),
             ("Disk", "disk", iec))


def _values(row, key):
    """(physical, sold, p95, peak) of resource ``key`` in a node_report row."""
    physical = row["cpus"] if key == "cpu" else row[f"{key}_physical"]
    return (physical, row[f"{key}_sold"], row.get(f"{key}_p95"), row.get(f"{key}_peak"))


def density(row):
    """The SVG of one node: a group of four bars per resource, values as text."""
    parts, y = [], 0
    bar_room = WIDTH - LABEL - 110  # the value text sits right of the longest bar
    for title, key, fmt in RESOURCES:
        values = _values(row, key)
        top = max([v for v in values if v] or [1])
        parts.append(format_html('<text x="0" y="{}" class="group">{}</text>', y + 12, title))
        y += 18
        for (name, colour), value in zip(BARS, values):
            width = 0 if not value else max(1, round(bar_room * float(value) / float(top)))
            shown = "—" if value is None else fmt(value)
            parts.append(format_html(
                '<g class="bar" data-resource="{}" data-bar="{}" data-value="{}">'
                '<text x="0" y="{}">{}</text>'
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                '<title>{} {}: {}</title></rect>'
                '<text x="{}" y="{}">{}</text></g>',
                key, name, "" if value is None else value, y + BAR - 3, name,
                LABEL, y, width, BAR, colour, title, name, shown,
                LABEL + width + 6, y + BAR - 3, shown))
            y += BAR + GAP
        y += 8
    return _svg(f"density-{row['node']}", f"Node {row['node']}: physical, sold, p95 and peak",
                y, parts)


def headroom_share(row):
    """The node's smaller headroom (RAM or CPU) as a share of physical; None if unsized."""
    shares = [row["headroom_ram"] / row["ram_physical"] if row["ram_physical"] else None,
              row["headroom_cpu"] / row["cpus"] if row["cpus"] else None]
    shares = [s for s in shares if s is not None]
    return min(shares) if shares else None


def by_headroom(rows):
    """``rows`` sorted by headroom share, least first (unsized nodes last)."""
    return sorted(rows, key=lambda r: (headroom_share(r) is None, headroom_share(r) or 0,
                                       r["node"]))


def fleet(rows):
    """The SVG of every node's headroom share, least first; below zero is drawn red."""
    parts, y = [], 0
    zero, span = LABEL + 60, WIDTH - LABEL - 120  # -50%..100% around the zero line
    for row in by_headroom(rows):
        share = headroom_share(row)
        shown = "unknown size" if share is None else f"{100 * share:.0f}%"
        clipped = max(-0.5, min(1.0, share or 0))
        # 60 px left of the zero line hold -50%, the span right of it +100%
        width = round(-clipped * 120) if clipped < 0 else round(clipped * span)
        x = zero - width if clipped < 0 else zero
        parts.append(format_html(
            '<g class="node" data-node="{}" data-headroom="{}"><text x="0" y="{}">{}</text>'
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {} headroom '
            '(RAM {}, CPU {})</title></rect><text x="{}" y="{}">{}</text></g>',
            row["node"], "" if share is None else f"{share:.4f}", y + BAR - 3, row["node"],
            x, y, width, BAR, "#c53030" if (share or 0) < 0 else "#1f8a4c", row["node"],
            shown, iec(row["headroom_ram"]), f"{row['headroom_cpu']:.2f}",
            max(x + width, zero) + 6, y + BAR - 3, shown))
        y += BAR + GAP
    parts.append(format_html('<line x1="{}" y1="0" x2="{}" y2="{}" stroke="#1d2330"/>',
                             zero, zero, y))
    return _svg("fleet-headroom", "Nodes by headroom at their risk level, least first", y,
                parts)


def _svg(ident, title, height, parts):
    return mark_safe(
        f'<svg id="{escape(ident)}" class="chart-svg" role="img" viewBox="0 0 {WIDTH} '
        f'{max(height, 1)}" width="{WIDTH}" height="{max(height, 1)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
        + "".join(parts) + "</svg>")
