"""`docktrail fingerprint`: match a known value against redacted ones in the trail.

Registered on the main group by `listener.cli`; imports only click at module level.
"""

from __future__ import annotations

import sys

import click

from listener.cli.common import State, handles_errors, main, pass_state


@main.command()
@pass_state
@handles_errors
def fingerprint(state: State) -> None:
    """Print the redacted form of each value read from stdin, one per line.

    The values are read from stdin, never from the command line, so that they
    do not land in shell history or in the audit log. Needs the redaction key
    (`redaction.key_file`); compare the output with `redacted:hmac:…` in the
    trail.
    """
    from config.errors import ConfigError
    from listener.redact import Redactor, load_key

    path = state.config.redaction_key_path()
    if not path.is_file():
        raise ConfigError(f"{path}: no redaction key here (it is created by ingest and run)")
    redactor = Redactor(load_key(path), state.config.redaction.secret_names)
    for line in sys.stdin:
        value = line.rstrip("\n")
        if value:
            click.echo(redactor.fingerprint(value))
