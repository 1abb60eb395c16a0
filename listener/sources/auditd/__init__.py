"""auditd as a source: which audit events are kept, what they become, live and from files.

**Kept** are events carrying one of the configured keys (`auditd.keys`, the
CIS 1.1 keys `auditd.cis_keys`, and `auditd.cli_key`). With
`auditd.drop_housekeeping` (the default) the daemon's own work is dropped,
recognized only by what the process cannot choose: no audit login (auid unset:
the daemon was started by init, not by someone who logged in) and an executable
that is a daemon binary by its full path (`auditd.daemon_dirs` with
`auditd.daemon_programs`; runc re-executing itself from a memfd shows exe "/"),
reading or running files, or touching only paths under its data and state
roots (`auditd.daemon_roots`; dockerd's own `docker-untar` helpers, chrooted
into an image layer, too). `comm` and argv[0] are the caller's choice and never
count. A write to a daemon configuration file, unit or binary is never
housekeeping, whoever makes it; writes by anyone else, and writes by the daemon
outside its roots, are always kept. A daemon's relative path (an `openat` on a
directory descriptor) is taken to be in its own trees.

**What they become** (`source="auditd"`, id `time_ordered_id(time_ns, "auditd",
host, serial, time_ns)` where host is the record's `node=` if any, so re-reading
a log stores nothing twice):

* `type="docker-cli"`, action = the subcommand (`run`, `rm`, `compose up` …):
  one per docker CLI execution, with argv, cwd and exe in `attributes`, `who`
  straight from the record (`method="auditd"`), and for run/create the
  `ContainerConfig` the argv asks for (`config`, origin argv). Its `CliCall`
  goes to the `Correlator` that attributes the Engine's events.
  `auditd.cli_events` chooses all calls, only those that can change something,
  or none.
* `type="daemon-file"`, action = the operation (write, create, delete, rename,
  attr, exec, read, link): a watch hit on the daemon's files (`-k docker`),
  `actor.name` the path, every PATH item in `attributes.paths`.
* `type="audit-rule"`, action = op (add_rule, remove_rule …): audit rules with
  these keys changed (someone may be blinding the audit).

Names: ``who.login`` and ``who.user`` come from the ENRICHED fields when the
log has them, else from `auditd.passwd_file` (ids stay numbers when neither
knows them).

**Live** (`AuditLogTail`): follows the log like ``tail -F`` by inode. At the
end of a file whose path now names another inode (auditd rotated it), the old
file is drained and the next one in the rotation chain opened. Every batch the
pipeline writes carries the tail's checkpoint (device, inode, offset, line,
last serial) — the start of the oldest event not yet complete, so a restart
re-reads it whole — through `CheckpointedTrail`; events re-read after a restart
have the ids of stored ones and are not stored again. A checkpoint is checked
against the bytes before its offset, so a file that reuses the inode is not
mistaken for it. Where records may have been lost (the checkpointed file is
gone, the log was truncated), a `source="docktrail"`, `type="audit-log"`,
`action="gap"` event says so. The log counts as read past an Engine event once
read to its end `auditd.audit_lag_secs` after it, or at once when docktrail's own
audit barrier sent after the event is read back (`barrier.py`, `auditd.barrier`).
"""

from listener.sources.auditd.checkpoints import CheckpointedTrail, CheckpointSource, StatefulTrail
from listener.sources.auditd.convert import AuditConverter, AuditCounters, Converted
from listener.sources.auditd.files import AuditLogFiles
from listener.sources.auditd.names import IdNames
from listener.sources.auditd.tail import AuditLogTail

__all__ = [
    "AuditConverter",
    "AuditCounters",
    "AuditLogFiles",
    "AuditLogTail",
    "CheckpointSource",
    "CheckpointedTrail",
    "Converted",
    "IdNames",
    "StatefulTrail",
]
