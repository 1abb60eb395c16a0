"""The one line a benchmark prints per figure, for `bench/all.py` to collect.

    FIGURE <name> <value> <unit> [baseline=<number>] [ratio=<number>] [target=<text>]
           [min=<number> max=<number> runs=<n>]

* ``name``: dotted, no spaces, stable across runs (``audit_parse.ratio_vs_ausearch``);
  the harness aggregates runs by name.
* ``value``: a number; ``unit``: one word (``records/s``, ``ms``, ``%``, ``x``).
* ``baseline``: the same quantity for the baseline measured in the same run.
* ``ratio``: value / baseline (or the ratio the bench defines, e.g. ours / ausearch).
* ``target``: ``<100``, ``>=2.0`` (checked against the value) or ``ratio>=0.5``
  (against the ratio); any other text is shown as it is and not checked.
* ``min``/``max``/``runs``: the spread of the runs a median value was taken from.

Benchmarks keep their own human-readable output and add these lines. A query's
plan has a line of its own, shown under "Query plans" in docs/PERFORMANCE.md:

    PLAN <size> <filter> <EXPLAIN QUERY PLAN lines, joined by " | ">
"""

from __future__ import annotations

from collections.abc import Sequence


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    ratio: float | None = None,
    target: str | None = None,
    spread: Sequence[float] = (),
) -> None:
    """Print one FIGURE line (flushed: a bench killed by its time cap keeps what it printed);
    `spread`: the runs behind `value`, printed as min, max and their count."""
    parts = ["FIGURE", name, f"{value:.6g}", unit]
    if baseline is not None:
        parts.append(f"baseline={baseline:.6g}")
    if ratio is not None:
        parts.append(f"ratio={ratio:.6g}")
    if target is not None:
        parts.append(f"target={target}")
    if spread:
        parts += [f"min={min(spread):.6g}", f"max={max(spread):.6g}", f"runs={len(spread)}"]
    print(" ".join(parts), flush=True)


def plan(size: str, name: str, lines: Sequence[str]) -> None:
    """Print one PLAN line: the query plan of filter `name` on the trail of `size`."""
    print(f"PLAN {size} {name} " + " | ".join(lines), flush=True)


def slug(text: str) -> str:
    """A figure name part from a label: lower case, runs of other characters as ``_``."""
    out, gap = [], False
    for char in text.lower():
        if char.isascii() and char.isalnum():
            if gap and out:
                out.append("_")
            out.append(char)
            gap = False
        else:
            gap = True
    return "".join(out)
