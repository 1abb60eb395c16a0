"""The central trail's side: checking each host's chain as its records arrive.

The central trail is an ordinary docktrail trail: its own hash chain, its own
signed checkpoints. A host's rows are stored in it as new central events, so
the hosts' seq/hash cannot be its chain; they are kept in
`attributes.fleet` of each central event (`trail_id`, `seq`, `id`, `hash`,
`prev_hash` of the host row), from which the host's own hash can be
recomputed (`host_content`): the content with the host `id` and `seq` and
without `attributes.fleet` (or with its `shadowed` value, when the host's
event had an attribute of that name). What a host sends under that name can
therefore neither fake nor hide a problem. The event JSON contract is
unchanged otherwise.

Per host (the name the records are keyed by) the check keeps the last seq
and hash of both host chains, the last checkpoint and the host's signing key
(pinned on first sight), in `source_state` ``fleet.host:<host>``,
stored in the same transaction as the events. A record that does not extend
its chain is still stored (it is evidence) but carries `attributes.fleet`
`problem` and `detail`, and the `host-chain-broken` rule alerts on it:

- ``gap``: seqs are missing before it;
- ``fork``: a different row at a seq already received (a rewritten or
  rolled-back host trail);
- ``broken-link``: its `prev_hash` is not the hash of the row before it;
- ``bad-hash``: its hash is not sha256(prev_hash ‖ canonical body);
- ``new-trail``: the host publishes from another trail (a new database);
- ``rewind``: a checkpoint older than one already received;
- ``checkpoint-mismatch``: a checkpoint names a head the received chain does
  not have (or has not reached);
- ``bad-signature``: a checkpoint whose signature does not verify under the
  key it came with;
- ``key-changed``: a checkpoint signed by another key than the host's
  earlier ones (the new key is pinned after the alert). The first
  checkpoint of a new trail (its genesis) pins that trail's own key as part
  of the ``new-trail`` incident: named in its detail when it is the first
  row received, not a second alert;
- ``alert-without-event``: a host alert whose event never arrived.
- ``host-mismatch``: an event or alert naming another host than the one
  whose chain carries it (a host speaking for another: its records are
  evidence against the publisher, never attributed to the named host
  silently).

Records received again (a publisher that crashed before storing its
position) have central ids already stored and are dropped silently: central
ids derive from the host's (trail_id, seq, hash) (`sinks.kafka.centralids`).

Signed heads are stored as central events (`type` ``trail``, `action`
``checkpoint``, `attributes.checkpoint`), so they are covered by the central
chain too; `host_heads` hands one host's out.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from config.errors import InputError, TrailError
from listener.model.alert import Alert
from listener.model.event import Actor, Event, canonical_json, chain_hash, natural_id
from sinks.base import EventFilter
from sinks.kafka.centralids import HOST_ORDERED, CentralIds
from sinks.kafka.chainstate import (
    STATE_PREFIX,
    Accepted,
    Batch,
    Head,
    HostAlert,
    HostChain,
    Located,
    Problem,
)
from sinks.kafka.records import Kind, Record
from sinks.signing import checkpoint_payload, fingerprint, verify_signature

FLEET_KEY = "fleet"
CHECKPOINT_TYPE, CHECKPOINT_ACTION = "trail", "checkpoint"


def _checkpoint_id(trail_id: str, number: int, signature: str) -> str:
    return natural_id("fleet-checkpoint", trail_id, number, signature)


class FleetChains:
    """Per-host chain verification over the records of many hosts."""

    def __init__(
        self,
        states: Mapping[str, Mapping[str, Any]],
        max_hosts: int = 10_000,
        ids: CentralIds = HOST_ORDERED,
    ) -> None:
        """`max_hosts`: a record of a host beyond that many is malformed (`consume.max_hosts`);
        `ids`: how the central trail names host rows (`CentralIds.of_trail`)."""
        self.max_hosts = max_hosts
        self.ids = ids
        self.hosts: dict[str, HostChain] = {}
        for name, state in states.items():
            if name.startswith(STATE_PREFIX):
                try:
                    self.hosts[name.removeprefix(STATE_PREFIX)] = HostChain.from_state(state)
                except (KeyError, TypeError, ValueError, IndexError) as exc:
                    raise TrailError(
                        f"source_state {name}: not a host chain state ({exc!r})"
                    ) from exc
        self._changed: set[str] = set()

    def changed_states(self) -> dict[str, dict[str, Any]]:
        """`source_state` of the hosts whose chains moved since the last call."""
        changed, self._changed = self._changed, set()
        return {STATE_PREFIX + host: self.hosts[host].as_state() for host in sorted(changed)}

    def ids_to_look_up(self, records: Iterable[Record]) -> tuple[list[str], list[str]]:
        """Central (event ids, alert ids) whose presence `accept` needs to know."""
        events: list[str] = []
        alerts: list[str] = []
        ids = self.ids
        for record in records:
            if record.kind == "event":
                events.append(ids.event(record.trail_id, record.seq, record.hash))
            elif record.kind == "alert":
                alerts.append(ids.alert(record.trail_id, record.seq, record.hash))
            else:
                body = record.body
                events.append(
                    _checkpoint_id(record.trail_id, record.seq, str(body.get("signature")))
                )
                if isinstance(body.get("seq"), int) and isinstance(body.get("hash"), str):
                    events.append(ids.event(record.trail_id, body["seq"], body["hash"]))
        return events, alerts

    def accept(
        self, records: Sequence[Located], stored_events: set[str], stored_alerts: set[str]
    ) -> Accepted:
        """Check each record against its host's chain and turn it into central rows."""
        batch = Batch(self.ids, stored_events, stored_alerts)
        for located in records:
            try:
                self._accept(located.record, batch)
            except InputError as exc:
                batch.out.malformed.append(InputError(exc.reason, path=located.where))
        return batch.out

    def _accept(self, record: Record, batch: Batch) -> None:
        chain = self._chain(record, batch)
        if record.kind == "event":
            _RowCheck(record, chain, batch).run()
        elif record.kind == "alert":
            _AlertCheck(record, chain, batch).run()
        else:
            _CheckpointCheck(record, chain, batch).run()
        self._changed.add(record.host)

    def _chain(self, record: Record, batch: Batch) -> HostChain:
        chain = self.hosts.get(record.host)
        if chain is None:
            if len(self.hosts) >= self.max_hosts:
                raise InputError(
                    f"host {record.host[:64]!r}: a publisher beyond the {self.max_hosts} "
                    "followed (kafka.consume.max_hosts); record skipped"
                )
            chain = self.hosts[record.host] = HostChain(record.trail_id)
        elif chain.trail_id != record.trail_id:
            problem = (
                "new-trail",
                f"host {record.host} now publishes trail {record.trail_id}, not "
                f"{chain.trail_id} (received up to seq {chain.events[0]}): a new or replaced "
                "database",
            )
            chain = HostChain(record.trail_id, key=chain.key, pending=problem, repin=True)
            self.hosts[record.host] = chain
        return chain


def _origin(record: Record) -> dict[str, Any]:
    return {"publisher": record.host, "trail_id": record.trail_id, "seq": record.seq}


def _chain_problem(
    what: str, record: Record, last: Head, body: Mapping[str, Any]
) -> Problem | None:
    """The first problem of a chained row (event or alert) against the last one received."""
    if chain_hash(record.prev_hash, canonical_json(dict(body))) != record.hash:
        return "bad-hash", f"{what} seq {record.seq}: hash does not match its content"
    seq, digest = last
    if record.seq <= seq:
        return "fork", f"{what} seq {record.seq} received again with another hash (had {seq})"
    if record.seq > seq + 1:
        return "gap", f"{what} seq {seq + 1}..{record.seq - 1} missing"
    if record.prev_hash != digest:
        return "broken-link", f"{what} seq {record.seq}: prev_hash is not the hash of seq {seq}"
    return None


class _RowCheck:
    """One event or alert row against its host chain; what differs is how it is stored."""

    kind: Kind = "event"

    def __init__(self, record: Record, chain: HostChain, batch: Batch) -> None:
        self.record, self.chain, self.batch = record, chain, batch

    def run(self) -> None:
        record, chain = self.record, self.chain
        central_id = self.central_id()
        stored = self.stored_ids()
        head: Head = getattr(chain, f"{self.kind}s")
        if central_id in stored:  # received before: only the chain position moves
            self.batch.out.duplicates += 1
            setattr(chain, f"{self.kind}s", max(head, (record.seq, record.hash)))
            return
        row = self.parse()
        problem = _first(
            self.chain.take_pending(),
            _chain_problem(self.kind, record, head, record.body),
            _host_problem(self.kind, record, row),
        )
        origin = {**_origin(record), "id": row.id, "hash": record.hash,
                  "prev_hash": record.prev_hash}  # fmt: skip
        self.store(row, central_id, origin, problem)
        stored.add(central_id)
        setattr(chain, f"{self.kind}s", (record.seq, record.hash))

    def central_id(self) -> str:
        return self.batch.ids.event(self.record.trail_id, self.record.seq, self.record.hash)

    def stored_ids(self) -> set[str]:
        return self.batch.stored_events

    def parse(self) -> Any:
        return _parse(self.record, Event)

    def store(
        self, event: Any, central_id: str, fleet: dict[str, Any], problem: Problem | None
    ) -> None:
        if FLEET_KEY in event.attributes:  # the host's own, kept for its hash
            fleet["shadowed"] = event.attributes[FLEET_KEY]
        _mark(fleet, problem, self.batch.out)
        attributes = {**event.attributes, FLEET_KEY: fleet}
        update = {"id": central_id, "seq": None, "hash": None, "prev_hash": None}
        self.batch.out.events.append(event.model_copy(update={**update, "attributes": attributes}))


class _AlertCheck(_RowCheck):
    kind: Kind = "alert"

    def central_id(self) -> str:
        return self.batch.ids.alert(self.record.trail_id, self.record.seq, self.record.hash)

    def stored_ids(self) -> set[str]:
        return self.batch.stored_alerts

    def parse(self) -> Any:
        return _parse(self.record, Alert)

    def store(
        self, alert: Any, central_id: str, origin: dict[str, Any], problem: Problem | None
    ) -> None:
        record, out = self.record, self.batch.out
        origin["event_seq"] = alert.event_seq
        if problem is not None:
            out.events.append(_trail_event(record, "alert", alert.time_ns, origin, problem, out))
        event_id = self.batch.ids.event(record.trail_id, alert.event_seq, record.event_hash)
        update = {"id": central_id, "seq": None, "hash": None, "prev_hash": None}
        out.host_alerts.append(HostAlert(alert.model_copy(update=update), event_id, origin))


def _parse(record: Record, model: type[Event] | type[Alert]) -> Event | Alert:
    if record.body.get("seq") != record.seq:
        raise InputError(
            f"{record.kind} body seq {record.body.get('seq')!r} is not record seq {record.seq}"
        )
    try:
        return model.model_validate(record.body)
    except ValidationError as exc:
        raise InputError(f"{record.kind} seq {record.seq}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"


def _host_problem(what: str, record: Record, row: Event | Alert) -> Problem | None:
    if row.host == record.host:
        return None
    return "host-mismatch", (
        f"{what} seq {record.seq} names host {row.host!r} but was published by {record.host!r}"
    )


def _first(*problems: Problem | None) -> Problem | None:
    """The first problem found, naming the others in its detail (one alert per row)."""
    found = [problem for problem in problems if problem is not None]
    if not found:
        return None
    name, detail = found[0]
    also = "; ".join(f"also {other}: {text}" for other, text in found[1:])
    return name, f"{detail}; {also}" if also else detail


def _mark(fleet: dict[str, Any], problem: Problem | None, out: Accepted) -> None:
    if problem is not None:
        fleet["problem"], fleet["detail"] = problem
        out.problems += 1


def _trail_event(
    record: Record,
    action: str,
    time_ns: int,
    fleet: dict[str, Any],
    problem: Problem | None,
    out: Accepted,
    **attributes: Any,
) -> Event:
    """A central `trail` event about a host's trail (a checkpoint, a broken alert chain)."""
    fleet = dict(fleet)
    _mark(fleet, problem, out)
    return Event(
        id=natural_id("fleet-trail", record.trail_id, action, record.seq, canonical_json(fleet)),
        time_ns=time_ns,
        source="docktrail",
        host=record.host,
        type=CHECKPOINT_TYPE,
        action=action,
        actor=Actor(id=record.trail_id, name=record.host),
        attributes={**attributes, FLEET_KEY: fleet},
    )


_CHECKPOINT_TYPES: dict[str, type] = {
    "n": int, "trail_id": str, "seq": int, "hash": str, "time_ns": int,
    "key_fingerprint": str, "signature": str, "alerts_seq": int, "alerts_hash": str,
    "public_key": str,
}  # fmt: skip


class _CheckpointCheck:
    def __init__(self, record: Record, chain: HostChain, batch: Batch) -> None:
        self.record, self.chain, self.batch = record, chain, batch
        self.cp = _checkpoint_body(record)

    def run(self) -> None:
        record, cp = self.record, self.cp
        central_id = _checkpoint_id(record.trail_id, record.seq, cp["signature"])
        if central_id in self.batch.stored_events:
            self.batch.out.duplicates += 1
            return
        signature = self._signature_problem()
        problem = _first(self.chain.take_pending(), signature, self._head_problem())
        if signature is None or signature[0] == "key-changed":  # a forgery moves nothing
            self.chain.checkpoint = max(
                self.chain.checkpoint, (cp["n"], cp["seq"], cp["alerts_seq"])
            )
        event = _trail_event(record, CHECKPOINT_ACTION, cp["time_ns"], _origin(record), problem,
                             self.batch.out, checkpoint=cp)  # fmt: skip
        self.batch.out.events.append(event.model_copy(update={"id": central_id}))
        self.batch.stored_events.add(central_id)

    def _signature_problem(self) -> Problem | None:
        cp, chain = self.cp, self.chain
        public = _public_key(cp["public_key"])
        payload = checkpoint_payload(cp["trail_id"], cp["seq"], cp["hash"], cp["time_ns"],
                                     cp["alerts_seq"], cp["alerts_hash"])  # fmt: skip
        if (
            public is None
            or fingerprint(public) != cp["key_fingerprint"]
            or cp["trail_id"] != self.record.trail_id
            or not verify_signature(public, payload, cp["signature"])
        ):
            return "bad-signature", f"checkpoint {cp['n']} does not verify"
        old, chain.key = chain.key, cp["key_fingerprint"]
        repin, chain.repin = chain.repin, False
        if old is None or old == chain.key or (repin and chain.pending is None):
            return None  # a replacing trail's own key, once new-trail was told
        return "key-changed", f"checkpoint {cp['n']} signed by key {chain.key}, not {old}"

    def _head_problem(self) -> Problem | None:
        cp, chain = self.cp, self.chain
        number, seq, alerts_seq = chain.checkpoint
        if cp["n"] <= number or cp["seq"] < seq or cp["alerts_seq"] < alerts_seq:
            return "rewind", (
                f"checkpoint {cp['n']} (seq {cp['seq']}, alerts {cp['alerts_seq']}) after "
                f"checkpoint {number} (seq {seq}, alerts {alerts_seq}): the trail went backwards"
            )
        if cp["seq"] > chain.events[0]:
            return "checkpoint-mismatch", (
                f"checkpoint {cp['n']} names seq {cp['seq']}, only {chain.events[0]} received"
            )
        at_seq = self.batch.ids.event(self.record.trail_id, cp["seq"], cp["hash"])
        if cp["seq"] and at_seq not in self.batch.stored_events:
            return "checkpoint-mismatch", (
                f"checkpoint {cp['n']}: seq {cp['seq']} received with another hash"
            )
        if cp["alerts_seq"] == chain.alerts[0] and cp["alerts_hash"] != chain.alerts[1]:
            return "checkpoint-mismatch", (
                f"checkpoint {cp['n']}: alert seq {cp['alerts_seq']} received with another hash"
            )
        return None


def _checkpoint_body(record: Record) -> dict[str, Any]:
    body = record.body
    for name, kind in _CHECKPOINT_TYPES.items():
        if type(body.get(name)) is not kind:
            raise InputError(f"checkpoint {record.seq}: {name} must be a {kind.__name__}")
    if body["n"] != record.seq:
        raise InputError(f"checkpoint body n {body['n']} is not record seq {record.seq}")
    return {name: body[name] for name in _CHECKPOINT_TYPES}


def _public_key(text: str) -> Ed25519PublicKey | None:
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError:
        return None


def central_alert(host_alert: HostAlert, event_seq: int) -> Alert:
    """The host's alert as a central alert pointing at the central copy of its event."""
    alert = host_alert.alert
    details = {**alert.details, FLEET_KEY: host_alert.origin}
    update = {"event_seq": event_seq, "event_id": host_alert.event_id, "details": details}
    return alert.model_copy(update=update)


def orphan_event(host_alert: HostAlert) -> Event:
    """A central `trail` event for a host alert whose event never arrived."""
    origin = host_alert.origin
    record = Record("alert", origin["publisher"], origin["trail_id"], origin["seq"], {})
    problem = ("alert-without-event",
               f"alert seq {origin['seq']} points at event seq {origin['event_seq']}, "
               "which was not received")  # fmt: skip
    return _trail_event(record, "alert", host_alert.alert.time_ns, origin, problem, Accepted())


def host_content(event: Event) -> dict[str, Any]:
    """The content of the host's row a central event was made from (what the host hashed)."""
    fleet = event.attributes[FLEET_KEY]
    attributes = {k: v for k, v in event.attributes.items() if k != FLEET_KEY}
    if "shadowed" in fleet:
        attributes[FLEET_KEY] = fleet["shadowed"]
    return event.content() | {"id": fleet["id"], "seq": fleet["seq"], "attributes": attributes}


def host_heads(trail: Any, host: str) -> Iterator[dict[str, Any]]:
    """The signed heads (checkpoints) received from `host`, oldest first.

    Each is the checkpoint as the host signed it (`n`, `trail_id`, `seq`, `hash`,
    `time_ns`, `key_fingerprint`, `signature`, `alerts_seq`, `alerts_hash`,
    `public_key`) plus `central_seq` and, when the check found one, `problem`.
    """
    found = EventFilter(host=host, type=CHECKPOINT_TYPE, action=CHECKPOINT_ACTION)
    for event in trail.query(found):
        head = dict(event.attributes.get("checkpoint") or {})
        arrival = event.attributes.get(FLEET_KEY) or {}
        if not head or not _is_head_of(event.id, head, arrival, host):
            continue
        problem = arrival.get("problem")
        yield {**head, "central_seq": event.seq, **({"problem": problem} if problem else {})}


def _is_head_of(central_id: str, head: Mapping[str, Any], arrival: Any, host: str) -> bool:
    """Whether a central `trail`/`checkpoint` event is the record of a checkpoint `host`
    published, not a host's own row shaped like one (host trails hold `trail` events
    too, and a row names whatever host it likes)."""
    if not isinstance(arrival, Mapping) or arrival.get("publisher") != host:
        return False
    trail_id, number = arrival.get("trail_id"), head.get("n")
    if not isinstance(trail_id, str) or not isinstance(number, int):
        return False
    return central_id == _checkpoint_id(trail_id, number, str(head.get("signature")))
