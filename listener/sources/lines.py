"""Reading lines in bounded memory (stdlib only: the audit parser uses it too)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, AnyStr

__all__ = ["Oversized", "bounded_lines"]

_READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Oversized:
    """A line longer than the cap, skipped unread: its size and the cap."""

    size: int
    cap: int

    @property
    def reason(self) -> str:
        return (
            f"line of {self.size} bytes is longer than the cap of {self.cap} (input.max_line_bytes)"
        )


def bounded_lines(
    stream: IO[AnyStr], max_len: int, chunk: int = _READ_CHUNK
) -> Iterator[list[AnyStr | Oversized]]:
    """Blocks of the lines of `stream` (without their newline), each at most `max_len` long.

    A longer line comes out as one `Oversized` in its place; it is never held
    in memory whole (at most `max_len` + `chunk` at once). An empty last line
    (the file ends with a newline) is not a line.
    """
    empty = stream.read(0)
    newline: Any = "\n" if isinstance(empty, str) else b"\n"
    # read1: what one underlying read gives, so that a damaged gzip stream has
    # handed out everything before the damage when its error comes.
    read = getattr(stream, "read1", stream.read)
    rest = empty
    skipped = -1  # length so far of an oversized line being skipped, else -1
    while data := read(chunk):
        block: list[AnyStr | Oversized] = []
        if skipped >= 0:
            end = data.find(newline)
            if end < 0:
                skipped += len(data)
                continue
            block.append(Oversized(skipped + end, max_len))
            data, skipped = data[end + 1 :], -1
        lines = (rest + data).split(newline)
        rest = lines.pop()
        if lines and max(map(len, lines)) <= max_len:
            block.extend(lines)  # the usual case, without a test per line in Python
        else:
            block.extend(
                line if len(line) <= max_len else Oversized(len(line), max_len) for line in lines
            )
        if len(rest) > max_len:
            skipped, rest = len(rest), empty
        if block:
            yield block
    if skipped >= 0:
        yield [Oversized(skipped, max_len)]
    elif rest:
        yield [rest]
