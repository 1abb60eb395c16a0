"""Attribution: tie each Docker Engine event to the docker CLI call that caused it.

The Engine never says who. auditd's execve record of the docker CLI does: the
login (auid, which survives sudo), the effective user, pid, session, tty and
the full argv. `Correlator` keeps the recent CLI calls (`CliCall`) and, for an
Engine event, picks the call that caused it:

1. **Candidates** are calls made before the event and recent enough: within
   `window_secs` (stop/restart/rm -f add their `--time`), or `long_window_secs`
   for calls that may pull or build first (run, create, pull, compose up …).
2. A call is a candidate only if its **command can cause** the event (a
   `docker stop` causes kill/die/stop, never create; `rm` causes destroy, and
   kill/die only with `-f`) and the **identifiers agree**: the container name
   or id prefix the call names, `--name` of a run, the image reference (for a
   run without `--name`, pull, tag, import, rmi), the compose project (label
   `com.docker.compose.project`), the network or volume name.
3. **Lineage** links the later events of one call to it: a run's container id
   (from its create) for its start/attach/connect right after, and for its
   die/destroy while attached (or right after: the command exited at once);
   an exec's `execID`, even an hour later; an image id (from the tag event of
   an import). Names are resolved through the container ids seen, so `network
   disconnect` (which names only the id) of a stopped container finds the
   `docker stop NAME` call. A container restarted much later by its restart
   policy is nobody's.
4. Evidence ranks: an identifier or a run's own start (`high`) > an image
   match for a run without `--name`, or the end of a run's container (below a
   call that names it: a `docker stop` meanwhile) > only the subcommand fits
   and the call names nothing the event could be compared with (prune, load,
   `import -` with no reference, a compose project we could only derive;
   confidence `medium`).
5. **One call, one create**: the create (and start) of a run, the
   exec_create of an exec and the like are claimed by the first event that
   matches, so two identical calls get the two creates in order, and a call
   never gets a second one.
6. When the best candidates come from **different logins**, the event is
   *not* attributed: `who.method` stays `unknown` and `who.candidates` lists
   the logins. A guess is never presented as fact.

Live, the CLI record and the Engine event race: the CLI's execve happens
before its API request, but auditd's log is read a little later than the
Engine's stream. `Attribution` (a pipeline Stage) therefore waits, for at most
`hold_secs`, until the audit log has been read past the event's time
(`Correlator.advance`). Offline ingest merges both files by time instead.
Memory is bounded: calls expire with their window (and at most `max_calls`
are kept); lineage maps are capped and emptied on destroy/exec_die.
"""

from listener.correlate.correlator import Correlator
from listener.correlate.effects import CliCall, CorrelationStats
from listener.correlate.stage import Attribution

__all__ = [
    "Attribution",
    "CliCall",
    "CorrelationStats",
    "Correlator",
]
