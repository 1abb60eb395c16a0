"""Audit barriers: docktrail's own USER messages through the kernel's audit queue, so that
the live tail knows the log holds every record queued before a given time.

The kernel queues audit records in one FIFO (kauditd → auditd → the log, in order).
A docker CLI's records (its execve …) are queued at the syscall's exit, before the
CLI sends its request, so before the Engine event it causes exists. After an Engine
event of time T arrives, docktrail sends a USER message (type 1005, over
NETLINK_AUDIT; needs CAP_AUDIT_WRITE) at time S > T::

    type=USER msg=audit(…): pid=<docktrail's pid> uid=0 … msg='docktrail-barrier nonce=<hex> n=<k>'

Once the tail reads it back, every record queued before S is in the log: the
watermark moves to S at once instead of waiting `auditd.audit_lag_secs`.

A line counts as a barrier only with the kernel-written ``pid=`` of this process,
this process's random nonce and the number of a barrier it sent and has not seen
yet: another process (a forger needs CAP_AUDIT_WRITE, and its own pid is what the
kernel writes) or a copied line moves nothing. When barriers cannot be sent
(EPERM without CAP_AUDIT_WRITE, ECONNREFUSED in a user namespace, no audit in the
kernel) or are not seen in the log within `SEEN_WITHIN_SECS` (a ``never,user``
rule, audit disabled, auditd writing elsewhere), that is logged once and the
tail keeps the wall-clock watermark, as without barriers.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)

MARK = "docktrail-barrier"
_CANDIDATES = ("type=USER msg=audit(", "node=")  # how a line of ours starts (number_of)
AUDIT_USER = 1005
NETLINK_AUDIT = 9
_NLMSG_ERROR = 2
_NLM_F_REQUEST_ACK = 0x1 | 0x4
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ERRNO = struct.Struct("=i")  # nlmsgerr starts with the negative errno (0: accepted)
_ACK_SECS = 5.0

SEEN_WITHIN_SECS = 1.0  # auditd writes within milliseconds: later, it does not write ours
RETRY_AFTER_SECS = 10.0  # after one was not seen: the lag meanwhile, then try again
_KEPT_UNSEEN = 64  # barriers sent and not seen that may still turn up late
FAST_POLL_SECS = 0.002  # how soon the tail reads again while a barrier is on its way


class AuditChannel(Protocol):
    """Where barrier messages go (the kernel's audit netlink socket)."""

    def send(self, text: str) -> None: ...

    def close(self) -> None: ...


class NetlinkAudit:
    """A NETLINK_AUDIT socket that sends USER messages; refusals raise OSError."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        self._sock.bind((0, 0))
        self._sock.settimeout(_ACK_SECS)
        self._seq = 0

    def send(self, text: str) -> None:
        self._seq += 1
        payload = text.encode() + b"\0"
        header = _HEADER.pack(
            _HEADER.size + len(payload), AUDIT_USER, _NLM_F_REQUEST_ACK, self._seq, 0
        )
        self._sock.sendto(header + payload, (0, 0))
        while True:  # the kernel answers at once (it handles the message in sendto)
            error = _ack_error(self._sock.recv(8192), self._seq)
            if error is None:
                continue
            if error:
                raise OSError(error, os.strerror(error))
            return

    def close(self) -> None:
        self._sock.close()


def _ack_error(reply: bytes, seq: int) -> int | None:
    """The errno of the kernel's answer to message `seq` (0: accepted), None if not in `reply`."""
    offset = 0
    while offset + _HEADER.size <= len(reply):
        length, kind, _flags, answered, _port = _HEADER.unpack_from(reply, offset)
        if kind == _NLMSG_ERROR and answered == seq and length >= _HEADER.size + 4:
            return -int(_ERRNO.unpack_from(reply, offset + _HEADER.size)[0])
        offset += max((length + 3) & ~3, _HEADER.size)
    return None


class AuditBarriers:
    """Barriers sent and seen, one on its way at a time.

    Thread use: `want` and `step` on the event loop; `seen_in` in the tail's reader
    thread; sending in a thread of its own (the kernel may make a sender wait up to
    its backlog_wait_time when the audit queue is full).
    """

    def __init__(
        self,
        channel: Callable[[], AuditChannel] = NetlinkAudit,
        *,
        seen_within_secs: float = SEEN_WITHIN_SECS,
        retry_after_secs: float = RETRY_AFTER_SECS,
    ) -> None:
        self.nonce = secrets.token_hex(8)
        self._open_channel = channel
        self._channel: AuditChannel | None = None
        self._prefix = f" msg='{MARK} nonce={self.nonce} n="
        self._pid = f"pid={os.getpid()} "
        self.seen_within_secs = seen_within_secs
        self.retry_after_secs = retry_after_secs
        self._lock = threading.Lock()
        self._sent: dict[int, int] = {}  # barrier number -> wall-clock time it was sent
        self._count = 0
        self._outstanding: tuple[int, float] | None = None  # (number, monotonic deadline)
        self._to_send: int | None = None
        self._wanted_ns = -1
        self.passed_ns = -1  # every record queued before this time has been read
        self._paused_until = 0.0
        self.unavailable: str | None = None  # why barriers cannot be sent
        self._unseen_said = False
        self.counts = {"sent": 0, "seen": 0, "unseen": 0}  # barriers, for benchmarks and logs
        self._go = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- event loop -------------------------------------------------------

    @property
    def outstanding(self) -> bool:
        """A barrier is on its way (the tail reads again soon)."""
        return self._outstanding is not None

    def want(self, time_ns: int) -> None:
        """An Engine event of `time_ns` waits for the audit log to be read past it."""
        with self._lock:
            self._wanted_ns = max(self._wanted_ns, time_ns)

    def step(self) -> None:
        """Gives up on a barrier not seen in time; sends the next one if an event waits."""
        now = time.monotonic()
        with self._lock:
            if self._outstanding is not None and now >= self._outstanding[1]:
                self._not_seen(now)
            if (
                self._outstanding is None
                and self.unavailable is None
                and not self._closed
                and self._wanted_ns > self.passed_ns
                and now >= self._paused_until
            ):
                self._count += 1
                self._outstanding = (self._count, now + self.seen_within_secs)
                self._to_send = self._count
                self._start()
                self._go.set()

    def _not_seen(self, now: float) -> None:
        self.counts["unseen"] += 1
        self._outstanding = None
        self._paused_until = now + self.retry_after_secs
        if not self._unseen_said:
            self._unseen_said = True
            log.warning(
                "audit barriers are not seen in the audit log (a `never,user` rule, audit "
                "disabled, or auditd writing elsewhere?): Engine events wait "
                "auditd.audit_lag_secs for their audit records instead"
            )

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audit-barrier", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._go.set()

    # -- sender thread ----------------------------------------------------

    def _run(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            with self._lock:
                if self._closed:
                    break
                number, self._to_send = self._to_send, None
                if number is None:
                    continue
                sent_ns = time.time_ns()  # after the event that wants it arrived
                self.counts["sent"] += 1
                self._sent[number] = sent_ns
                while len(self._sent) > _KEPT_UNSEEN:  # never seen: forget the oldest
                    del self._sent[next(iter(self._sent))]
            self._send(number)
        if self._channel is not None:
            self._channel.close()

    def _send(self, number: int) -> None:
        try:
            if self._channel is None:
                self._channel = self._open_channel()
            self._channel.send(f"{MARK} nonce={self.nonce} n={number}")
        except OSError as exc:
            with self._lock:
                self.unavailable = str(exc)
                self._outstanding = None
                self._sent.pop(number, None)
            log.warning(
                "cannot send audit barriers (%s): Engine events wait auditd.audit_lag_secs "
                "for their audit records (docktrail needs CAP_AUDIT_WRITE in the initial "
                "user and pid namespaces)",
                exc,
            )

    # -- reader thread ----------------------------------------------------

    def seen_in(self, lines: list[str]) -> frozenset[int]:
        """Indices of our barrier lines among `lines`; moves `passed_ns` past them."""
        found: list[int] = []
        mark = MARK
        # Only a USER record (maybe after node=) can be ours (number_of): the other lines
        # of a busy log are passed over with one C call each, not searched for the mark.
        candidates = map(str.startswith, lines, itertools.repeat(_CANDIDATES))
        for index in itertools.compress(itertools.count(), candidates):
            line = lines[index]
            if mark in line and self._ours(line):
                found.append(index)
        return frozenset(found)

    def _ours(self, line: str) -> bool:
        number = self.number_of(line)
        if number is None:
            return False
        with self._lock:
            sent_ns = self._sent.pop(number, None)
            if sent_ns is None:
                return False  # not sent, or seen already: a copy
            self.passed_ns = max(self.passed_ns, sent_ns)
            self.counts["seen"] += 1
            if self._outstanding is not None and self._outstanding[0] == number:
                self._outstanding = None
            self._paused_until = 0.0  # seen, if late: they work
        return True

    def number_of(self, line: str) -> int | None:
        """The barrier number of one of our lines (kernel-written pid, our nonce), else None."""
        start = line.find("type=USER msg=audit(")
        if start < 0 or (start > 0 and not _node_prefix(line[:start])):
            return None
        body = line.find("): ", start)
        if body < 0 or not line.startswith(self._pid, body + 3):
            return None
        text = line.find(self._prefix, body)
        if text < 0:
            return None
        digits_at = text + len(self._prefix)
        end = line.find("'", digits_at)
        digits = line[digits_at:end] if end > 0 else ""
        return int(digits) if digits.isdigit() and len(digits) < 19 else None


def _node_prefix(text: str) -> bool:
    """``node=NAME `` (auditd's name_format) before ``type=``."""
    return text.startswith("node=") and text.endswith(" ") and " " not in text[:-1]
