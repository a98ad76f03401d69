"""The report's HTML: one self-contained page (inline CSS, images as base64 data URIs, no scripts,
no fonts or anything else fetched), written beside the PNG files it embeds."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0;
       color: #1d2733; background: #f6f7f9; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7em; margin: 0.2em 0 0.1em; }
h2 { font-size: 1.3em; margin: 1.8em 0 0.4em; padding-top: 0.6em; border-top: 2px solid #d5dbe3; }
h3 { font-size: 1.05em; margin: 1.3em 0 0.4em; }
.meta { color: #52606d; font-size: 0.92em; }
nav { background: #fff; border: 1px solid #d5dbe3; border-radius: 6px; padding: 8px 16px; margin: 14px 0; }
nav a { margin-right: 14px; color: #1f5fa8; text-decoration: none; }
figure { background: #fff; border: 1px solid #d5dbe3; border-radius: 6px; margin: 12px 0; padding: 10px; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #3e4c59; font-size: 0.9em; margin-top: 6px; }
table { border-collapse: collapse; background: #fff; font-size: 0.86em; margin: 8px 0; }
th, td { border: 1px solid #d5dbe3; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { background: #fff8e1; border-left: 4px solid #f0b429; padding: 6px 12px; margin: 8px 0; }
code { font-size: 0.92em; background: #eef1f5; padding: 0 3px; border-radius: 3px; }
"""


@dataclass
class FigureOut:
    """One figure: its file name in the report folder, PNG bytes, alt text and caption (plain text)."""

    filename: str
    data: bytes
    alt: str
    caption: str = ""


@dataclass
class Section:
    id: str
    title: str
    blocks: list[str] = field(default_factory=list)
    figures: list[FigureOut] = field(default_factory=list)

    def text(self, paragraph: str) -> None:
        self.blocks.append(f"<p>{esc(paragraph)}</p>")

    def note(self, text: str) -> None:
        self.blocks.append(f'<p class="note">{esc(text)}</p>')

    def heading(self, text: str) -> None:
        self.blocks.append(f"<h3>{esc(text)}</h3>")

    def figure(self, fig: FigureOut) -> None:
        self.figures.append(fig)
        self.blocks.append(figure_html(fig))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (),
              titles: Sequence[str | None] = ()) -> None:
        self.blocks.append(table_html(headers, rows, numeric, titles))


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_html(fig: FigureOut) -> str:
    caption = f"<figcaption>{esc(fig.caption)} <span class=\"meta\">({esc(fig.filename)})</span></figcaption>"
    return f'<figure><img src="{data_uri(fig.data)}" alt="{esc(fig.alt)}">{caption}</figure>'


def table_html(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (),
               titles: Sequence[str | None] = ()) -> str:
    """A table; columns in ``numeric`` align right; ``titles[i]`` is a hover text for row ``i``."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        tip = titles[i] if i < len(titles) else None
        attr = f' title="{esc(tip)}"' if tip else ""
        cells = "".join(f'<td class="num">{esc(v)}</td>' if j in numeric else f"<td>{esc(v)}</td>"
                        for j, v in enumerate(row))
        body.append(f"<tr{attr}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render(title: str, meta_lines: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole page."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    meta = "".join(f'<div class="meta">{esc(line)}</div>' for line in meta_lines)
    body = "".join(f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{"".join(s.blocks)}</section>'
                   for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><main><h1>{esc(title)}</h1>{meta}<nav>{nav}</nav>{body}</main></body></html>\n")


def fmt(value: Any, digits: int = 4) -> str:
    """Numbers for tables: ``-`` for None, 4 decimals for fractions, 3 significant digits for big counts."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1e6:
            return f"{value:.3g}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int) and abs(value) >= 1e6:
        return f"{value:.3g}"
    return str(value)


__all__ = ["FigureOut", "Section", "data_uri", "esc", "fmt", "render", "table_html"]
