"""The `Event` model: one thing that happened, from any source.

Every source yields `Event`s; sinks store them; rules read them. The contract
(field names and meaning) is DESIGN.md's "Event object". This module imports
only pydantic and the standard library so that sinks and notifiers can import
it without pulling in the service.

The canonical form (`canonical_json` of `content()`) is what the trail hashes:
sorted keys, no insignificant white space, UTF-8, time as integer UTC
nanoseconds, null fields of the model left out (`compact`). It covers `seq`
and every content field but not `hash` and `prev_hash`, which are derived
from it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any, Literal, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field

Source = Literal["docker", "auditd", "docktrail"]

GENESIS_HASH = "0" * 64
"""`prev_hash` of the first event of a trail."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Actor(_Part):
    """What the event is about."""

    id: str = Field("", description="Engine object id (container id, image id, volume name…).")
    name: str | None = Field(
        None, description="Container or network name, image reference, volume name."
    )
    image: str | None = Field(None, description="Image reference of a container.")


class Who(_Part):
    """The person (login) and process behind the event, and how we know."""

    login: str | None = Field(None, description="Login name of the audit uid (survives sudo).")
    auid: int | None = Field(None, description="Audit login uid; None when unset.")
    user: str | None = Field(None, description="Effective user name of the process.")
    uid: int | None = Field(None, description="Effective uid of the process.")
    pid: int | None = Field(None, description="Process id of the client.")
    command: str | None = Field(None, description="Command line of the client.")
    method: str = Field(
        "unknown",
        description="How `who` was found: auditd-cli (the docker CLI call that caused it), "
        "auditd (the audit record of the change itself), intent, unknown (an audit source "
        "covered the event and tied it to no login), or unavailable (no audit source "
        "covered it: `reason` says why).",
    )
    reason: str | None = Field(
        None, description="unavailable: why no audit source covered the event."
    )
    claimed: str | None = Field(
        None,
        description="Who the `audit.who` label claims; anyone can set a label, so it is "
        "shown beside the evidence and never taken as the login.",
    )
    ses: int | None = Field(None, description="Audit session id of the process; None when unset.")
    tty: str | None = Field(None, description="Terminal of the process (pts0); None without one.")
    exe: str | None = Field(None, description="Executable of the process (/usr/bin/docker).")
    audit_id: str | None = Field(
        None, description="The audit event `who` comes from, as auditd prints it (TIME:SERIAL)."
    )
    matched_by: str | None = Field(
        None,
        description="auditd-cli: what tied the event to the CLI call: name, id, image, "
        "compose-project, exec-id, container (an earlier event of the same call), or "
        "subcommand (the only compatible call in the window).",
    )
    confidence: str | None = Field(
        None,
        description="auditd-cli: high when an identifier matched, medium when only the "
        "subcommand and the time window did.",
    )
    candidates: list[str] | None = Field(
        None,
        description="Logins of CLI calls that fit equally well but disagree; `method` is then "
        "unknown.",
    )


class Why(_Part):
    """The declared reason for a change."""

    reason: str | None = Field(None, description="Free text reason (audit.why label, intent).")
    ticket: str | None = Field(None, description="Change ticket (audit.ticket label).")
    expires: str | None = Field(None, description="When the change should be undone.")
    source: str | None = Field(None, description="Where the reason came from: label, intent.")


class Chained:
    """What events and alerts share: a UTC ns time and content hashed into a chain."""

    if TYPE_CHECKING:  # declared by the models themselves; invisible to pydantic here
        time_ns: int

    @property
    def time(self) -> str:
        return format_time_ns(self.time_ns)

    def content(self) -> dict[str, Any]:
        """The hashed content: every field but `hash` and `prev_hash`, compacted (`compact`)."""
        return compact(cast(BaseModel, self).model_dump(exclude={"hash", "prev_hash"}))

    def to_json_object(self, tz: tzinfo = UTC) -> dict[str, Any]:
        """The DESIGN.md object, with `time` rendered in `tz`."""
        obj = cast(BaseModel, self).model_dump()
        obj["time"] = format_time_ns(self.time_ns, tz)
        return obj


COMPACTED_PARTS = ("actor", "who", "why")
"""The model parts whose null fields `compact` leaves out (as it does at the top level)."""


def compact(content: dict[str, Any]) -> dict[str, Any]:
    """`content` without its null fields, at the top level and in the model parts.

    Every field left out is null by default, so loading the JSON gives back the
    same model: about 40 % of a Docker event's JSON was nulls of `who` and `why`.
    Free-form objects (`attributes`, `config`, `details`) keep their nulls: they
    are data. Trails written before hold the nulls; each row is hashed as stored.
    """
    out = {key: value for key, value in content.items() if value is not None}
    for part in COMPACTED_PARTS:
        value = out.get(part)
        if type(value) is dict:
            out[part] = {key: item for key, item in value.items() if item is not None}
    return out


@dataclass(frozen=True, slots=True)
class Launch:
    """What a container runs, from the live Engine's inspect of its create.

    Attribution compares it with the argv of the CLI calls that could have made
    the container. It is never stored or hashed: a command line may hold secrets.
    The image's own entrypoint and command are None when the image was not read.
    """

    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    image_entrypoint: tuple[str, ...] | None = None
    image_command: tuple[str, ...] | None = None


class Event(Chained, BaseModel):
    """One event of the trail. `seq`, `hash` and `prev_hash` are set by the trail."""

    model_config = ConfigDict(extra="forbid")

    seq: int | None = Field(None, description="Position in the trail, strictly increasing.")
    id: str = Field(description="Derived from the natural key: the same input gives the same id.")
    time_ns: int = Field(description="When it happened, integer UTC nanoseconds.")
    source: Source = Field(description="Which source produced it.")
    host: str = Field(description="Host the event happened on.")
    type: str = Field(description="Object type: container, image, volume, network, …")
    action: str = Field(description="What happened: create, start, exec_start, …")
    actor: Actor = Field(default_factory=Actor)
    attributes: dict[str, Any] = Field(default_factory=dict)
    who: Who = Field(default_factory=Who)
    why: Why = Field(default_factory=Why)
    config: dict[str, Any] = Field(
        default_factory=dict, description="Security-relevant settings (inspect or CLI argv)."
    )
    hash: str | None = Field(None, description="sha256(prev_hash ‖ canonical event), hex.")
    prev_hash: str | None = Field(None, description="`hash` of the previous event.")
    # In this process only (see Launch): not a field, so never dumped, stored or hashed.
    # A slot, not a PrivateAttr: a private attribute makes pydantic call back into
    # Python for every event it builds: about a tenth of reading one back from the trail.
    __slots__ = ("_launch_slot",)

    @property
    def launch(self) -> Launch | None:
        return getattr(self, "_launch_slot", None)

    def note_launch(self, launch: Launch | None) -> None:
        object.__setattr__(self, "_launch_slot", launch)


_STDLIB_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(content: dict[str, Any]) -> str:
    """Sorted keys, no white space, UTF-8 text.

    orjson is four times faster than the standard library here, which is the
    largest Python cost of an append; it writes the same bytes for what events
    hold (strings, integers, booleans, null, lists, objects) and NaN as null.
    What it refuses (integers beyond 64 bits, lone surrogates, foreign
    objects) goes to the standard library, which encodes or raises.
    """
    try:
        return orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONEncodeError:
        return _STDLIB_CANONICAL.encode(content)


def chain_hash(prev_hash: str, canonical: str) -> str:
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def natural_id(*parts: object) -> str:
    """The event id: a digest of the natural key, so re-reading an input dedupes."""
    key = "\x1f".join(map(str, parts))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def time_prefix(time_ns: int) -> str:
    """The first 8 hex digits of a time-ordered id: the time in steps of 2**32 ns (4.3 s)."""
    return f"{(time_ns >> 32) & 0xFFFFFFFF:08x}"


def time_ordered_id(time_ns: int, *parts: object) -> str:
    """An event id for a source with its own clock (the Engine, the kernel's audit).

    `time_prefix(time_ns)`, then the first 24 hex digits of `natural_id(*parts)`
    (which must include the time): as deterministic as `natural_id`, and the ids
    of one moment sit side by side in the trail's unique id index, so a commit
    dirties its last leaves instead of one random leaf per event (docs/trail-index-cost.md).
    The ids of older docktrail were `natural_id(*parts)`: the digest's first 24
    digits are the same, which is how an upgraded trail still dedupes them
    (`legacy_id_prefix`).
    """
    return time_prefix(time_ns) + natural_id(*parts)[:24]


def legacy_id_prefix(event_id: str, time_ns: int) -> str | None:
    """What an older docktrail's id of the same event began with (its first 24 digits),
    or None when `event_id` is not time-ordered (`time_ordered_id`)."""
    if len(event_id) != 32 or not event_id.startswith(time_prefix(time_ns)):
        return None
    return event_id[8:]


def format_time_ns(time_ns: int, tz: tzinfo = UTC) -> str:
    """RFC 3339 with nanoseconds, in `tz` with its offset (`Z` for UTC)."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}"
    offset = moment.strftime("%z")
    if offset in ("+0000", ""):
        return text + "Z"
    return f"{text}{offset[:3]}:{offset[3:]}"


def observed_change(event: Event) -> str | None:
    """What a reconciliation found changed while nobody listened (appeared, disappeared,
    started, stopped, restarted), for docktrail's own `observed` events only: an Engine
    event or a captured file cannot claim to be one."""
    if event.source != "docktrail" or event.action != "observed":
        return None
    change = event.attributes.get("change")
    return change if isinstance(change, str) else None


def container_gone(event: Event) -> bool:
    """A container removed: destroyed, or found gone by a reconciliation."""
    if event.type != "container":
        return False
    return event.action == "destroy" or observed_change(event) == "disappeared"
