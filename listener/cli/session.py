"""`docktrail session EXEC_ID`: the commands of one `docker exec` session, with its owner."""

from __future__ import annotations

import click

from listener.cli.common import State, existing_trail, handles_errors, main, pass_state


@main.command()
@click.argument("exec_id")
@click.option("--format", "fmt", default="text", show_default=True,
              type=click.Choice(["text", "json"]))  # fmt: skip
@pass_state
@handles_errors
def session(state: State, exec_id: str, fmt: str) -> None:
    """One exec session as a transcript: who opened it, when, every command and its exit.

    EXEC_ID is the exec's id or a prefix of it (`query -f session=…` takes the same);
    the commands need the exec-session audit rules (deploy/audit/docktrail-exec.rules).
    """
    import json

    from config.errors import TrailError
    from listener.safetext import printable
    from listener.sessions.transcript import command_lines, header_lines, sessions_of
    from sinks.base import EventFilter

    with existing_trail(state) as trail:
        events = list(trail.query(EventFilter(session=exec_id)))
        found = sessions_of(events)
        if not found:
            raise TrailError(f"no exec session {exec_id!r} in the trail")
        alerts = {e.seq: trail.alerts_for_event(e.seq) for e in events}
    tz = state.timezone()
    if fmt == "json":
        for event in events:
            obj = event.to_json_object(tz)
            obj["alerts"] = [a.to_json_object(tz) for a in alerts.get(event.seq, [])]
            click.echo(json.dumps(obj, ensure_ascii=False))
        return
    for one in found.values():
        lines = [*header_lines(one, tz)]
        transcript = command_lines(one, tz)
        for event in one.commands:  # a command, then the alerts it raised
            lines.append(next(transcript))
            lines += [f"      ! {a.severity:8} {a.rule}: {a.summary}" for a in alerts[event.seq]]
        lines += transcript  # overflow, end
        click.echo("\n".join(printable(line) for line in lines))
