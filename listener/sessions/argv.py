"""Command lines run inside containers: size bounded.

Their secrets are taken out by the shared redaction (`listener.redact`), which
knows the password flags of the programs people run in containers.
"""

from __future__ import annotations


def bounded_argv(argv: list[str], max_bytes: int) -> tuple[list[str], int]:
    """At most `max_bytes` of argv (UTF-8), cut at the end; how many bytes were cut."""
    total = sum(len(arg.encode("utf-8", "surrogateescape")) for arg in argv)
    if total <= max_bytes:
        return argv, 0
    kept: list[str] = []
    room = max_bytes
    for arg in argv:
        data = arg.encode("utf-8", "surrogateescape")
        if len(data) <= room:
            kept.append(arg)
            room -= len(data)
            continue
        if room > 0:
            kept.append(data[:room].decode("utf-8", "ignore") + "…")
        break
    return kept, total - max_bytes
