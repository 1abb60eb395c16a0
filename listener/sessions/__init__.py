"""What people did inside `docker exec` sessions (issue #22).

The Engine knows each exec (id, container, first process id) and docktrail
knows who opened it (the exec's attribution). auditd, with the optional rules
of deploy/audit/docktrail-exec.rules, records every execve, fork and exit of
processes without a login (auid unset), which is what a container's processes
are. `SessionTracker` ties the two together: it follows the exec's first
process and its descendants by their pid/ppid links and turns each command
into an `exec-command` event of the trail, with the session's owner.
"""

from listener.sessions.records import EXEC_COMMAND, EXEC_OVERFLOW, ProcessRecord, SessionInfo
from listener.sessions.tracker import SessionTracker

__all__ = ["EXEC_COMMAND", "EXEC_OVERFLOW", "ProcessRecord", "SessionInfo", "SessionTracker"]
