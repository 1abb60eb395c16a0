"""Following one audit log like `tail -F` by inode: batches, skipped lines, and the
fingerprint that recognises a checkpointed file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from config.errors import InputError
from listener.bounds import active_limits
from listener.sources.auditd.convert import Converted
from listener.sources.auditparse import rotation_order


class FileId(NamedTuple):
    dev: int
    ino: int
    path: str


class _Batch:
    """Consecutive complete lines of one file, as one read returned them."""

    __slots__ = ("ascii", "file", "lines", "marks", "number", "start")

    def __init__(self, file: FileId, start: int, number: int, lines: list[str], ascii: bool):
        self.file = file
        self.start = start  # byte offset of lines[0] in its file
        self.number = number  # line number of lines[0] in its file (1-based)
        self.lines = lines  # decoded (surrogateescape), without their "\n"
        self.ascii = ascii  # then characters are bytes
        self.marks: frozenset[int] = frozenset()  # indices of our barrier lines: never fed

    def offset(self, index: int) -> int:
        """Byte offset of lines[index] in the file (worked out only for a checkpoint)."""
        before = self.lines[:index]
        if self.ascii:
            return self.start + sum(map(len, before)) + index
        encoded = (
            len(line)
            if type(line) is _SkippedLine
            else len(line.encode("utf-8", "surrogateescape"))
            for line in before
        )
        return self.start + sum(encoded) + index


class _SkippedLine(str):
    """A line longer than `input.max_line_bytes`, skipped unread by the live tail.

    Its text is empty but `len()` is the line's size in bytes: byte offsets of
    the lines after it stay right, and the assembler, which refuses lines
    longer than its cap, reports it as one malformed line with that size.
    """

    size: int

    def __new__(cls, size: int) -> _SkippedLine:
        line = super().__new__(cls, "")
        line.size = size
        return line

    def __len__(self) -> int:
        return self.size


# Lines lo..hi-1 of a batch; and, once fed, the global line number of lines[lo].
Span = tuple[_Batch, int, int]
FedSpan = tuple[int, _Batch, int, int]


class Follower:
    """`tail -F` by inode over one log path and its rotated names (path.1, path.2 …)."""

    def __init__(self, path: Path, chunk: int = 1 << 20, max_line: int | None = None) -> None:
        self.path = path
        self.chunk = chunk
        self.max_line = max_line or active_limits().max_line_bytes
        self._skipped = -1  # bytes so far of a line too long to hold, else -1
        self.fd: int | None = None
        self.file: FileId | None = None
        self.offset = 0  # after the last complete line handed out
        self.line = 0  # lines handed out from this file
        self._rest = b""
        self.gap: str | None = None  # why records may have been missed, once

    # -- opening -----------------------------------------------------------

    def open(self, checkpoint: Mapping[str, Any] | None, start_at: str) -> None:
        if checkpoint and self._resume(checkpoint):
            return
        if checkpoint:
            oldest = self._chain()
            self.gap = (
                f"checkpointed audit log (inode {checkpoint.get('ino')}, "
                f"{checkpoint.get('path')}) is gone: reading from the oldest log kept"
            )
            if oldest:
                self._open_file(oldest[0], 0, 0)
            return
        if not self.path.exists():
            return  # opened from its start when it appears
        size = self.path.stat().st_size
        if start_at == "end":
            self._open_file(self._id_of(self.path), size, _count_lines(self.path, size))
        else:
            self._open_file(self._id_of(self.path), 0, 0)

    def _resume(self, checkpoint: Mapping[str, Any]) -> bool:
        want = (checkpoint.get("dev"), checkpoint.get("ino"))
        offset = int(checkpoint.get("offset", 0))
        for file in self._chain():
            if (file.dev, file.ino) != want:
                continue
            before = checkpoint.get("before")  # None: not known when it was written
            if before is not None and file_fingerprint(file.path, offset) != before:
                return False  # the inode was reused for another file
            self._open_file(file, offset, int(checkpoint.get("line", 0)))
            return True
        return False

    def fingerprint(self, file: FileId, offset: int) -> str | None:
        """Of the bytes before `offset` in `file`, if it is the one open (else None)."""
        if self.fd is None or self.file != file:
            return None
        return offset_digest(os.pread(self.fd, _FINGERPRINT, max(0, offset - _FINGERPRINT)), offset)

    def _chain(self) -> list[FileId]:
        """The log and its rotated copies (not compressed ones), oldest first."""
        names = [self.path, *self.path.parent.glob(self.path.name + ".*")]
        found = []
        for name in rotation_order(names):
            if name.suffix == ".gz":
                continue
            with contextlib.suppress(OSError):
                found.append(self._id_of(name))
        return found

    @staticmethod
    def _id_of(path: Path) -> FileId:
        st = path.stat()
        return FileId(st.st_dev, st.st_ino, str(path))

    def _open_file(self, file: FileId, offset: int, line: int) -> None:
        self.close()
        fd = os.open(file.path, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(fd)
        self.fd, self.file = fd, FileId(st.st_dev, st.st_ino, file.path)
        self.offset, self.line, self._rest, self._skipped = offset, line, b"", -1
        os.lseek(fd, offset, os.SEEK_SET)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # -- reading -----------------------------------------------------------

    def read(self) -> tuple[_Batch | None, bool]:
        """Complete new lines, and whether the end of the log was reached."""
        if self.fd is None:
            if self.path.exists():
                with contextlib.suppress(OSError):
                    self._open_file(self._id_of(self.path), 0, 0)
            return None, True
        data = os.read(self.fd, self.chunk)
        if data:
            return self._lines(data), len(data) < self.chunk
        if self._rotated():
            return self._switch(), False
        self._check_truncated()
        return None, True

    def _lines(self, data: bytes, final: bool = False) -> _Batch | None:
        """Split off complete lines (`final`: the unterminated rest too, at a rotation).

        The whole block is decoded and split at once (surrogateescape maps bytes
        one to one and never joins a byte with a following newline, so this is
        what decoding line by line gives); byte offsets are worked out only when
        a checkpoint needs one.
        """
        skipped: list[str] = []
        skipped_bytes = 0
        if self._skipped >= 0:  # the rest of a line too long to hold: drop it unread
            end = data.find(b"\n")
            if end < 0 and not final:
                self._skipped += len(data)
                return None
            size = self._skipped + (len(data) if end < 0 else end)
            skipped, skipped_bytes = [_SkippedLine(size)], size + (end >= 0)
            data, self._skipped = (b"" if end < 0 else data[end + 1 :]), -1
        buffer = self._rest + data
        cut = len(buffer) if final else buffer.rfind(b"\n") + 1
        self._rest = buffer[cut:]
        if len(self._rest) > self.max_line:
            self._skipped, self._rest = len(self._rest), b""
        if cut == 0 and not skipped:
            return None
        body = buffer[:cut]
        lines = body.decode("utf-8", "surrogateescape").split("\n") if cut else [""]
        if body.endswith(b"\n") or not cut:
            lines.pop()  # the empty piece after the last newline
        assert self.file is not None
        batch = _Batch(self.file, self.offset, self.line + 1, skipped + lines, body.isascii())
        self.offset += skipped_bytes + cut
        self.line += len(batch.lines)
        return batch

    def _rotated(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return False  # mid-rotation: the new file is not there yet
        assert self.file is not None
        return (st.st_dev, st.st_ino) != (self.file.dev, self.file.ino)

    def _switch(self) -> _Batch | None:
        """Our file was rotated away and is complete: hand out its tail, open the next."""
        tail = self._lines(b"", final=True) if self._rest or self._skipped >= 0 else None
        assert self.file is not None
        chain = self._chain()
        ids = [(f.dev, f.ino) for f in chain]
        here = (self.file.dev, self.file.ino)
        if here in ids and ids.index(here) + 1 < len(chain):
            self._open_file(chain[ids.index(here) + 1], 0, 0)
        elif self.path.exists():
            if here not in ids:
                self.gap = f"{self.file.path} vanished while being read"
            self._open_file(self._id_of(self.path), 0, 0)
        return tail

    def _check_truncated(self) -> None:
        assert self.fd is not None
        if os.fstat(self.fd).st_size < self.offset:  # copytruncate
            assert self.file is not None
            self.gap = f"{self.file.path} was truncated"
            self._open_file(self.file, 0, 0)


def _count_lines(path: Path, size: int) -> int:
    count = 0
    with open(path, "rb") as stream:
        while stream.tell() < size:
            block = stream.read(min(1 << 20, size - stream.tell()))
            if not block:
                break
            count += block.count(b"\n")
    return count


_FINGERPRINT = 64  # bytes before a checkpoint's offset that identify the file


def file_fingerprint(path: str, offset: int) -> str | None:
    """The digest `Follower.fingerprint` stored, computed on `path`; "" when unreadable."""
    try:
        with open(path, "rb") as stream:
            if os.fstat(stream.fileno()).st_size < offset:
                return ""
            start = max(0, offset - _FINGERPRINT)
            stream.seek(start)
            return offset_digest(stream.read(offset - start), offset)
    except OSError:
        return ""


def offset_digest(data: bytes, offset: int) -> str | None:
    """A file reused under the same inode will not have these bytes right there."""
    if offset == 0:
        return None
    if not data.endswith(b"\n"):
        return ""  # not a line boundary: never matches a stored fingerprint
    return hashlib.sha256(data).hexdigest()[:16]


def stamp_of(text: str) -> str | None:
    start = text.find("msg=audit(")
    end = text.find("):", start)
    return text[start + 10 : end] if start >= 0 and end > start else None


@dataclass(slots=True)
class Cycle:
    converted: list[Converted] = field(default_factory=list)
    malformed: list[InputError] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    watermark_ns: int = -1
    idle: bool = False
    gap: str | None = None
    open: bool = False  # the log is open: the records read cover the time read through
    auditing: str | None = None  # "stopped"/"started": auditd or its CLI rule went or came
