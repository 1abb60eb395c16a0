"""The building blocks of the trail's SQL: a condition with its parameters (`Term`),
any of several, a list of parameter marks, and a text prefix as an index-friendly range.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Term(NamedTuple):
    """One condition of a query, its parameters, and the order its rows are walked in
    when it is a page's branch of its own (`queries._merged_pages`)."""

    clause: str
    params: list[Any]
    order: str = "seq"


def any_term(terms: list[Term]) -> tuple[str, list[Any]]:
    """One condition: any of `terms`."""
    clause = "(" + " OR ".join(f"({term.clause})" for term in terms) + ")"
    return clause, [param for term in terms for param in term.params]


def marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" * len(values))


def prefix_sql(column: str, prefix: str) -> tuple[str, list[Any]]:
    """`column` starts with `prefix`, as an index-friendly range."""
    upper = _prefix_upper(prefix)
    if upper is None:
        return f"{column} >= ?", [prefix]
    return f"{column} >= ? AND {column} < ?", [prefix, upper]


def _prefix_upper(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (UTF-8 byte order)."""
    while prefix:
        nxt = ord(prefix[-1]) + 1
        if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded; skip past them
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None
