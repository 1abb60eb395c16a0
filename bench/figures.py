"""The one line a benchmark prints per figure, for `bench/all.py` to collect.

    FIGURE <name> <value> <unit> [baseline=<number>] [ratio=<number>] [target=<text>]

* ``name``: dotted, no spaces, stable across runs (``audit_parse.ratio_vs_ausearch``);
  the harness aggregates runs by name.
* ``value``: a number; ``unit``: one word (``records/s``, ``ms``, ``%``, ``x``).
* ``baseline``: the same quantity for the baseline measured in the same run.
* ``ratio``: value / baseline (or the ratio the bench defines, e.g. ours / ausearch).
* ``target``: ``<100``, ``>=2.0`` (checked against the value) or ``ratio>=0.5``
  (against the ratio); any other text is shown as it is and not checked.

Benchmarks keep their own human-readable output and add these lines.
"""

from __future__ import annotations


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    baseline: float | None = None,
    ratio: float | None = None,
    target: str | None = None,
) -> None:
    """Print one FIGURE line (flushed: a bench killed by its time cap keeps what it printed)."""
    parts = ["FIGURE", name, f"{value:.6g}", unit]
    if baseline is not None:
        parts.append(f"baseline={baseline:.6g}")
    if ratio is not None:
        parts.append(f"ratio={ratio:.6g}")
    if target is not None:
        parts.append(f"target={target}")
    print(" ".join(parts), flush=True)


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
