"""Small inline SVG plots for the HTML report: no library, no script, no external asset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

COLORS = {
    "allow": "#2e7d32",
    "require_approval": "#f9a825",
    "deny": "#c62828",
    "fail_closed": "#6a1b9a",
    "bar": "#1565c0",
    "track": "#e0e0e0",
}
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def stacked_bars(buckets: Sequence[Mapping[str, object]], keys: Sequence[str], *, title: str) -> str:
    """Vertical stacked bars, one per bucket (``start`` labels the first and last)."""
    width, height, left, bottom = 720, 220, 44, 28
    plot_h = height - bottom - 10
    totals = [sum(int(str(b[k])) for k in keys) for b in buckets]
    top = max(totals, default=0) or 1
    step = (width - left - 10) / max(len(buckets), 1)
    parts = [_open(width, height, title)]
    parts.append(f'<line x1="{left}" y1="{10 + plot_h}" x2="{width - 10}" y2="{10 + plot_h}" stroke="#999"/>')
    parts.append(f'<text x="{left - 6}" y="16" text-anchor="end" {_FONT}>{top}</text>')
    parts.append(f'<text x="{left - 6}" y="{10 + plot_h}" text-anchor="end" {_FONT}>0</text>')
    for i, b in enumerate(buckets):
        y = 10.0 + plot_h
        for k in keys:
            h = plot_h * int(str(b[k])) / top
            if h:
                y -= h
                parts.append(
                    f'<rect class="bar" x="{left + i * step + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                    f'height="{h:.1f}" fill="{COLORS[k]}"><title>{escape(str(b["start"]))} {k}: {b[k]}</title></rect>'
                )
    if buckets:
        first, last = escape(str(buckets[0]["start"])), escape(str(buckets[-1]["start"]))
        parts.append(f'<text x="{left}" y="{height - 8}" {_FONT}>{first}</text>')
        parts.append(f'<text x="{width - 10}" y="{height - 8}" text-anchor="end" {_FONT}>{last}</text>')
    parts.append("</svg>")
    return "".join(parts)


def hbars(items: Sequence[tuple[str, float, str | None]], *, title: str, unit: str = "") -> str:
    """Horizontal bars, one per ``(label, value, link)``; a label with a link is an anchor."""
    row, label_w, width = 20, 260, 720
    height = max(len(items), 1) * row + 10
    top = max((v for _, v, _ in items), default=0) or 1
    parts = [_open(width, height, title)]
    for i, (label, value, href) in enumerate(items):
        y = 5 + i * row
        text = f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" {_FONT}>{escape(label)}</text>'
        if href:
            text = f'<a href="{escape(href)}">{text}</a>'
        w = (width - label_w - 80) * value / top
        parts.append(text)
        parts.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 6}" '
            f'fill="{COLORS["bar"]}"><title>{escape(label)}: {value:g}{unit}</title></rect>'
        )
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 13}" {_FONT}>{value:g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def meter(rate: float | None, *, title: str) -> str:
    """A share as a filled track (an empty track and "n/a" when there is no denominator)."""
    width, height = 240, 22
    fill = 0.0 if rate is None else rate
    label = "n/a" if rate is None else f"{100 * rate:.1f}%"
    return (
        f"{_open(width, height, title)}"
        f'<rect x="0" y="4" width="180" height="14" fill="{COLORS["track"]}"/>'
        f'<rect class="bar" x="0" y="4" width="{180 * fill:.1f}" height="14" fill="{COLORS["bar"]}"/>'
        f'<text x="186" y="16" {_FONT}>{label}</text></svg>'
    )


def legend(keys: Sequence[str]) -> str:
    """Colour keys for the outcome plots."""
    return " ".join(
        f'<span class="key"><svg width="10" height="10" role="img" aria-label="{k}">'
        f'<rect width="10" height="10" fill="{COLORS[k]}"/></svg> {k}</span>'
        for k in keys
    )


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    )
