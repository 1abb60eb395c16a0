"""Text that people see: what a container name or a label may not do to them.

Whoever can name a container or set a label chooses bytes that reach the
auditor's terminal, a spreadsheet and the chat channel. Human-facing output
shows control and invisible formatting characters escaped (`\\x1b`, `\\u202e`)
instead of letting a terminal act on them; CSV cells that a spreadsheet would
run as a formula are quoted; chat text cannot mention a channel. JSON output
is exact and never goes through here.
"""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls, DEL, and the invisible characters that reorder or hide
# text (bidi overrides and isolates, zero-width marks, line/paragraph separators).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
# A spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@")
# `@here`, `@channel`, `<!channel>`, `!everyone`: an invisible word joiner after
# the sign keeps the text readable and stops every chat service from pinging.
_MENTION = re.compile(r"([@!])(?=\w)")
_MENTION_BREAK = "\u2060"  # WORD JOINER: invisible, and no chat treats it as a name


def printable(text: str) -> str:
    """`text` with every control or invisible formatting character shown escaped."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def csv_cell(value: Any) -> Any:
    """A CSV cell: text printable and, when a spreadsheet would run it, quoted with `'`."""
    if not isinstance(value, str):
        return value
    text = printable(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def no_mentions(text: str) -> str:
    """Chat text in which `@name`, `!channel` and `<!here>` mention nobody."""
    return _MENTION.sub(r"\1" + _MENTION_BREAK, text)
