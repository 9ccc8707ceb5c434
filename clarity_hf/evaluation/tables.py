# Copyright 2026 The clarity_hf authors. Apache-2.0.
"""Markdown tables and inert Markdown text, for every report, card and benchmark page of the package.

[`markdown_table`] builds a GitHub-flavoured table from rows of cells; a cell can never add a column or end the
table (`|` and line breaks are neutralised). [`escape_markdown`] makes any user-given string (a label, a model or
data set name, a note) render as the same plain text wherever it is placed: HTML is escaped, and the characters
that start a heading, a list, a table cell, a code span or a YAML front-matter fence become character references.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["code_span", "escape_markdown", "markdown_table"]

_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
# Characters with a Markdown meaning, as numeric character references (rendered as the character itself).
_MARKDOWN_SPECIALS = {c: f"&#{ord(c)};" for c in "\\`*[]#|~"}
# A thematic break / setext underline / front-matter fence (`---`, `===`), a list marker at the start of a line,
# or an underscore that could open or close emphasis (not one inside a word, as in Pleural_Thickening).
_RULES = re.compile(r"^[-+=]|[-=]{3,}|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def escape_markdown(value: Any) -> str:
    """`value` as inert, single-line Markdown text: HTML tags and attributes, headings, table pipes, emphasis,
    links, code spans and `---` fences all render as the literal characters."""
    text = _LINE_BREAKS.sub(" ", str(value))
    text = html.escape(text, quote=True)
    text = "".join(_MARKDOWN_SPECIALS.get(c, c) for c in text)
    return _RULES.sub(lambda m: "".join(f"&#{ord(c)};" for c in m.group()), text)


def code_span(value: Any) -> str:
    """`value` as an inline code span (inert: HTML is not interpreted there); a value holding a backtick or a pipe,
    which could close the span or split a table cell, is written as escaped text instead."""
    text = _LINE_BREAKS.sub(" ", str(value))
    if "`" in text or "|" in text:
        return escape_markdown(text)
    return f"`{text}`"


def _cell(value: Any) -> str:
    # A cell is already formatted Markdown (bold, code); only what would break the table is neutralised.
    return _LINE_BREAKS.sub(" ", str(value)).replace("|", "\\|")


def markdown_table(
    header: Sequence[Any], rows: Iterable[Sequence[Any]], align: Sequence[str] | None = None
) -> str:
    """A Markdown table; `align` gives one of "left", "right", "center" (or "") per column."""
    header = [_cell(h) for h in header]
    marks = {"": "---", "left": ":---", "right": "---:", "center": ":---:"}
    rule = [marks[a] for a in (align or [""] * len(header))]
    if len(rule) != len(header):
        raise ValueError(f"{len(rule)} alignments for {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    for row in rows:
        row = [_cell(c) for c in row]
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(header)} columns: {row}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
