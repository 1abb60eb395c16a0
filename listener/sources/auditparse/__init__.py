"""Parse raw auditd log lines and assemble them into audit events.

Pure parsing: no daemons, no sockets, stdlib only. The hot path uses ``str.find``
and ``str.split``, no regular expressions: it is benchmarked against
``ausearch -i`` (see ``bench/audit_parse.py``).

Line format and the quirks handled here::

    [node=HOST ]type=TYPE msg=audit(SECONDS.MILLIS:SERIAL): k=v k="v" ...[\\x1dK=V ...]

* ``node=HOST`` prefix (``name_format`` in auditd.conf) is optional; it becomes
  part of the event identity.
* ENRICHED log format: a GS byte (``\\x1d``) separates the raw fields from the
  fields auditd interpreted at write time (``AUID="alice" UID="root"``). They are
  kept apart in ``AuditRecord.enriched``. Never use ``str.splitlines`` on such
  text: it treats ``\\x1d`` as a line boundary.
* Values: ``"quoted"`` values are literal; auditd writes untrusted strings that
  contain spaces, quotes or non-ASCII bytes as unquoted hex instead. Hex is
  decoded (UTF-8, undecodable bytes kept as surrogate escapes) only for fields
  that auditd can encode (``_ENCODED_FIELDS``, EXECVE ``aN``/``aN[i]``), only
  when unquoted and only when the value is valid even-length hex, so ``(null)``
  and ``?`` stay as they are. Plain ``old``/``new`` are deliberately not in the
  set: TIME_ADJNTPVAL writes numbers there (``old=1234`` is not hex text).
* ``key`` may hold several rule keys joined by ``\\x01`` (always hex then).
* ``proctitle`` is NUL-separated argv (hex), or a quoted single string.
* USER_*, SERVICE_*, ... records carry a nested field list in ``msg='...'``; its
  fields are merged into the record's fields (the outer, kernel-written ones win
  on a name clash). Non ``k=v`` words (SELinux ``avc:  denied  { read }``) are
  kept, space-joined, under the ``"_text"`` key.
* Some producers quote every value (``success="yes"``); values may contain ``=``
  (``subj==unconfined`` -> ``"=unconfined"``); names may repeat (the last wins).
* EXECVE: ``argc=N a0=.. a1=..``; a long argument is split into ``aN_len=..
  aN[0]=.. aN[1]=..`` and the pieces, as well as the arguments, may be spread
  over several EXECVE records of one event. ``AuditEvent.argv`` reassembles them.
* Records of one event share ``msg=audit(TIME:SERIAL)`` and may be interleaved
  with other events. EOE closes an event, but auditd often writes none (the
  scenario-a capture has no EOE at all), so events also close when a record
  more than ``window_secs`` newer arrives, on ``flush(older_than_ns)`` (live
  tailing) and on ``flush_all()`` (end of input).
* Records that look standalone are not: the corpus has LOGIN, ANOM_PROMISCUOUS,
  SERVICE_START (a user message), AVC and TIME_ADJNTPVAL each followed by a
  SYSCALL record of the same serial, and the single record usually comes
  *first*. Only DAEMON_* records, which auditd writes itself and the kernel
  never extends, close their event at once.
* Malformed input (no ``type=``, garbled ``msg=audit(...)``, an unterminated
  quote or a second ``msg=audit(`` from a truncated line, NUL bytes, comment
  lines in test corpora, an EOE whose event the window already closed) never
  raises: it becomes a ``Malformed`` entry and the records around it are kept.

Speed: a record's fields are parsed when first asked for (``AuditRecord``): a
filter that drops most events reads a key or two, a docker CLI call needs three
records of six. When a line is fed only its header is read, with
``str.partition``, and its text checked for what would make the parse fail (an
unterminated quote: the line is reported malformed right away, as before).
Fields are split with ``str.split`` and a C-level ``dict(...)``; quoted
values with spaces, ``msg='...'``, ``{ ... }`` and unusual EXECVE records go
through an exact but slower scanner. The ENRICHED part, the tail of SYSCALL/PATH
records (``auid= ... key=``, ``dev= ...``), whole CWD/PROCTITLE/EXECVE records
repeat heavily on a host, so each distinct text is parsed once and copied
(bounded module-level caches); ``AuditRecord.get`` answers from a cached tail
without parsing the rest. ``feed_lines`` takes a block of lines at once; a line
whose text after its tail anchor was fed before takes a quick path (``bodies``):
only its head and stamp are left to check, and its records share that text. A
SYSCALL head is new every time but names the same fields in the same order: its
fields fill a template of its tail's (``heads``).

Accounting: for every input, ``records + malformed + blank`` equals the number
of lines fed, and every record ends up in exactly one emitted event.

Ordering: ``AuditAssembler.feed``/``flush``/``flush_all`` return events in the
order they close (window and flush closes come out in audit-time order, EOE
closes as they happen). ``read_audit_file`` re-sequences with ``LineOrder`` so
that events and ``Malformed`` entries come out in file order of their first
line, which is what a caller replaying a log can rely on.
"""

from listener.sources.auditparse.assembly import AuditAssembler
from listener.sources.auditparse.fields import UNSET_ID, parse_time_ns
from listener.sources.auditparse.files import (
    LineOrder,
    open_audit_text,
    read_audit_file,
    read_audit_files,
    rotation_order,
)
from listener.sources.auditparse.records import AuditEvent, AuditRecord, Malformed

__all__ = [
    "UNSET_ID",
    "AuditAssembler",
    "AuditEvent",
    "AuditRecord",
    "LineOrder",
    "Malformed",
    "open_audit_text",
    "parse_time_ns",
    "read_audit_file",
    "read_audit_files",
    "rotation_order",
]
