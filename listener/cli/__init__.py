"""The `docktrail` command line: one module per command group.

`common` holds what they share (global options, `State`, error handling,
filters); each command module registers its commands on `main`. Only click and
the standard library are imported at module level, so `docktrail --help` stays
fast; every command imports what it needs when it runs.
"""

from listener.cli import (  # noqa: F401  (each registers its commands on `main`)
    configure,
    consume,
    export,
    intent,
    notify,
    posture,
    proxy,
    redact,
    rules,
    serve,
    service,
    session,
    trail,
)
from listener.cli.common import QUERY_KEYS, main, parse_filters

__all__ = ["QUERY_KEYS", "main", "parse_filters"]
