"""Docker CLI calls converted again from a template of the same call by the same person.

A busy host runs the same few docker commands over and over (monitoring loops, CI
jobs, health scripts). Two such calls give trail events that differ only in the
event's id and time, the process ids and the audit id: building, redacting and
bounding the rest again was about a third of the cost of converting a call. The
first two calls of a kind are converted in full; the second's result, redacted
and bounded, becomes the template; the next calls copy it and set what differs.
Making a template costs about 20 µs: a kind seen once (a call with a name of
its own, say) does not pay it.

A template is keyed by everything the full conversion reads besides those: the
parsed call (by identity: the converter's call cache holds it), the node, the
rule keys, and every SYSCALL and ENRICHED value it looks up, with the passwd and
group files' read generation. It is made only when nothing in it came from a
failed name look-up (those are tried again while the service runs, as users are
added) and the bounds had nothing to cut.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import orjson

from listener.model.event import Event, Who
from listener.sources.auditd.unvalidated import cli_event_model, who_model

TEMPLATES_MAX = 1024  # kinds of calls remembered; the whole table is dropped when full
# Process ids set into a copy must stay exact in JSON (within 53 bits), as bounding
# the full event requires; larger ones (never seen on Linux) take the full path.
_EXACT_INT = 1 << 53

Lookup = Callable[[str], str | None]
TemplateKey = tuple[Hashable, ...]

# The SYSCALL fields and ENRICHED names the conversion of a call reads (besides pid
# and ppid, which are set into each copy): `AuditConverter._who_from` and `_group`.
_RAW_FIELDS = ("auid", "euid", "uid", "ses", "tty", "exe")
_RAW_NAMES = ("AUID", "EUID", "UID")
_FALLBACK_FIELDS = ("exe", "egid", "gid")
_FALLBACK_NAMES = ("EGID", "GID")


class Pending(NamedTuple):
    """A template to make once the event is redacted and bounded."""

    key: TemplateKey
    parsed: object


class CliTemplate(NamedTuple):
    parsed: object  # the parsed call the key names by identity, kept alive with it
    who: dict[str, Any]  # the Who's fields, `pid` and `audit_id` set per call
    event: bytes | None  # the Event's fields as JSON but `who`; None: no event is kept


def template_key(
    parsed: object,
    node: str | None,
    keys: frozenset[str],
    lookups: tuple[Lookup, Lookup, Lookup, Lookup],
) -> TemplateKey:
    """What a call's conversion depends on, but for its ids, time and process ids.

    `lookups`: the SYSCALL record's fields and ENRICHED names, and the event's
    (the SYSCALL's first) as the conversion reads them.
    """
    raw, raw_names, field, names = lookups
    return (
        id(parsed),
        node,
        keys,
        *map(raw, _RAW_FIELDS),
        *map(raw_names, _RAW_NAMES),
        *map(field, _FALLBACK_FIELDS),
        *map(names, _FALLBACK_NAMES),
    )


class CliTemplates:
    """The templates of one converter."""

    def __init__(self) -> None:
        # by the names files' read generation (`IdNames.generation`) and the key
        self._known: dict[tuple[Hashable, TemplateKey], CliTemplate] = {}
        self._seen: dict[tuple[Hashable, TemplateKey], object] = {}  # kinds seen once
        self.hits = 0

    def seen(self, key: TemplateKey, generation: Hashable, parsed: object) -> bool:
        """Whether this kind of call came before (a template is then worth making);
        noted otherwise."""
        if self._seen.get((generation, key)) is parsed:
            return True
        if len(self._seen) >= TEMPLATES_MAX:
            self._seen.clear()
        self._seen[generation, key] = parsed
        return False

    def remember(
        self, pending: Pending, generation: Hashable, who: Who, event: Event | None
    ) -> None:
        """Keep `who` and `event` (redacted and bounded) as the template of `pending`,
        for as long as the names files are at `generation` (as they were after the names
        in them were looked up).

        The caller sees to it that no name in them is one to look up again.
        """
        blob = None
        if event is not None:
            fields = event.model_dump()
            fields["who"] = None  # made per call
            blob = orjson.dumps(fields)
            if orjson.loads(blob) != fields:  # not JSON as it is (NaN, say): not kept
                return
        if len(self._known) >= TEMPLATES_MAX:
            self._known.clear()
        self._known[generation, pending.key] = CliTemplate(pending.parsed, who.model_dump(), blob)

    def made(
        self,
        key: TemplateKey,
        generation: Hashable,
        parsed: object,
        ids: tuple[str, int, str],  # the event's id, time and audit id
        pids: tuple[int | None, int | None],  # pid and ppid
    ) -> tuple[Who, Event | None] | None:
        """The call's Who and Event from the template of `key`; None without one."""
        template = self._known.get((generation, key))
        if template is None or template.parsed is not parsed:
            return None
        pid, ppid = pids
        if not (_exact(pid) and _exact(ppid)):
            return None
        event_id, time_ns, audit_id = ids
        who_values = template.who.copy()
        who_values["pid"], who_values["audit_id"] = pid, audit_id
        who = who_model(who_values)
        self.hits += 1
        if template.event is None:
            return who, None
        values = orjson.loads(template.event)
        values["id"], values["time_ns"], values["who"] = event_id, time_ns, who
        attributes = values["attributes"]
        attributes["ppid"], attributes["audit_id"] = ppid, audit_id
        return who, cli_event_model(values)


def _exact(number: int | None) -> bool:
    return number is None or 0 <= number < _EXACT_INT
