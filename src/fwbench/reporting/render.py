"""HTML and markdown from the same section list: a section is a title, optional
paragraphs, optional tables (header + rows of strings) and optional figures."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    css_class: str = ""
    # Columns whose cells get class="verdict" (the claims table).
    verdict_columns: tuple[int, ...] = ()


@dataclass
class Section:
    anchor: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (png path, alt text)
    preformatted: str = ""
    css_class: str = ""  # e.g. "warning": the section stands out


STYLE = """
body { font-family: system-ui, -apple-system, sans-serif; margin: 1.5rem auto; max-width: 80rem; color: #1a1a1a; line-height: 1.4; padding: 0 1rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #aaa; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #eef1f7; }
td.verdict { font-weight: 600; }
.supported { background: #dcefe3; } .contradicted { background: #f8dede; }
.inconclusive { background: #f3f0d8; } .not-measured { background: #ececec; }
.no-meaningful-difference { background: #e3ebf5; }
.warning { border: 2px solid #b00020; background: #fdecee; padding: 0.6rem 0.8rem; font-weight: 600; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; margin: 0.5rem 0; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; font-size: 0.85rem; }
nav a { margin-right: 0.8rem; }
"""


def verdict_class(text: str) -> str:
    for name in ("not measured", "contradicted", "supported", "no meaningful difference", "inconclusive"):
        if text.startswith(name):
            return name.replace(" ", "-")
    return ""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header)
    body = []
    for row in table.rows:
        cells = []
        for index, cell in enumerate(row):
            if index in table.verdict_columns:
                cells.append(f"<td class='verdict {verdict_class(cell)}'>{html.escape(cell)}</td>")
            else:
                cells.append(f"<td>{html.escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='{table.css_class}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _inline_png(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


def render_html(title: str, sections: list[Section]) -> str:
    nav = "".join(f"<a href='#{s.anchor}'>{html.escape(s.title)}</a>" for s in sections)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>",
    ]
    for section in sections:
        css = f" class='{section.css_class}'" if section.css_class else ""
        parts.append(f"<section id='{section.anchor}'{css}><h2>{html.escape(section.title)}</h2>")
        parts += [f"<p>{html.escape(p)}</p>" for p in section.paragraphs]
        parts += [_html_table(t) for t in section.tables]
        parts += [_inline_png(path, alt) for path, alt in section.figures]
        if section.preformatted:
            parts.append(f"<pre>{html.escape(section.preformatted)}</pre>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list[Section], figure_base: Path) -> str:
    lines = [f"# {title}", ""]
    for section in sections:
        heading = f"**{section.title}**" if section.css_class == "warning" else section.title
        lines += [f"## {heading}", ""]
        for paragraph in section.paragraphs:
            lines += [paragraph, ""]
        for table in section.tables:
            lines.append("| " + " | ".join(_md_cell(c) for c in table.header) + " |")
            lines.append("|" + "---|" * len(table.header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
            lines.append("")
        for path, alt in section.figures:
            lines += [f"![{alt}]({Path(path).relative_to(figure_base).as_posix()})", ""]
        if section.preformatted:
            lines += ["```", section.preformatted.rstrip(), "```", ""]
    return "\n".join(lines)
