"""Names from model files and remote devices are data: escaped where they leave edgekit.

A tensor, node or file name is chosen by whoever made the model, and a remote device's reply by whoever runs
it. Each output format gets one function: the terminal (control characters made visible, so an escape
sequence cannot recolour, hide or hyperlink text), markdown (cells and code spans that cannot split a table,
start a heading or embed HTML). HTML uses ``html.escape`` at each interpolation; plots turn off matplotlib's
math parsing (``$...$`` in a name crashed it).
"""

from __future__ import annotations

import unicodedata

# control, format (bidi overrides, zero-width), line and paragraph separators
_HIDDEN = {"Cc", "Cf", "Zl", "Zp"}
# what can make structure inside a table cell: cell breaks, code, emphasis, links and images, HTML, entities
# (line-start syntax such as '#' or '-' cannot occur: every row starts with '| ')
_MARKDOWN_SPECIAL = set("\\|`*[]<>&~")


def visible(text: object) -> str:
    """``text`` with every control or format character written as its escape (``\\x1b``, ``\\u202e``)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if unicodedata.category(ch) not in _HIDDEN else ascii(ch)[1:-1] for ch in text)


def markdown_text(text: object) -> str:
    """Plain text for a markdown table cell, on one line: what could make a link, an image, HTML, emphasis or a
    new cell backslash-escaped."""
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in visible(text))


def markdown_code(text: object) -> str:
    """A code span for a table cell: a fence longer than any backtick run inside, and ``|`` escaped (GFM
    splits cells on it even in code)."""
    body = visible(text).replace("|", "\\|")
    fence = "`" * (_longest_backtick_run(body) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") else ""
    return f"{fence}{pad}{body}{pad}{fence}"


def _longest_backtick_run(text: str) -> int:
    longest = run = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        longest = max(longest, run)
    return longest


def terminal_console(**options: object):
    """A rich Console that prints text as text: no markup or emoji codes parsed, control characters made
    visible in every string it renders (table cells included). Style comes from ``rich.text.Text`` objects."""
    from rich.console import Console

    class _TextConsole(Console):
        def render_str(self, text: str, **kwargs):  # type: ignore[override]
            return super().render_str(visible(text), **kwargs)

    return _TextConsole(markup=False, emoji=False, highlight=False, **options)
