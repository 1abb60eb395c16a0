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

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from config.models import AuditdConfig
from listener.argv import (
    DockerCall,
    container_config,
    exec_options,
    normalize_image_ref,
)
from listener.argvmatch import argv_agrees
from listener.coverage import Coverage, mark_build_step, mark_uncovered
from listener.model.containerconfig import ContainerConfig, merge_configs
from listener.model.event import Event, Who

__all__ = ["Attribution", "CliCall", "Correlator"]

_NS = 1_000_000_000
# Ranks of evidence: an identifier or the lineage of a call's own steps; an image
# (run without --name) or the end of a run's container; only the subcommand.
_HIGH, _IMAGE, _SUBCOMMAND = 3, 2, 1
_LINEAGE_CAP = 20_000  # containers / execs / images remembered for lineage
_EVICT_MARGIN_NS = 60 * _NS

Effects = dict[str, frozenset[str]]
_V = TypeVar("_V")


def _fx(**types: str) -> Effects:
    return {t: frozenset(actions.split()) for t, actions in types.items()}


# What each command can cause, by event type. Flag-dependent effects are added
# in `_effects`. Volume/network attach/detach of a container come with it.
_BASE_EFFECTS: dict[str, Effects] = {
    "run": _fx(container="create attach start die kill resize", image="pull",
               network="connect disconnect", volume="create mount unmount"),
    "create": _fx(container="create", image="pull", volume="create"),
    "start": _fx(container="start", network="connect", volume="mount"),
    "stop": _fx(container="kill die stop destroy", network="disconnect", volume="unmount"),
    "restart": _fx(container="kill die stop start restart", network="connect disconnect",
                   volume="mount unmount"),
    "kill": _fx(container="kill die destroy", network="disconnect", volume="unmount"),
    "rm": _fx(container="destroy"),
    "pause": _fx(container="pause"),
    "unpause": _fx(container="unpause"),
    "rename": _fx(container="rename"),
    "update": _fx(container="update"),
    "exec": _fx(container="exec_create exec_start exec_detach exec_die resize"),
    "attach": _fx(container="attach die resize"),
    "commit": _fx(container="commit pause unpause", image="tag"),
    "cp": _fx(container="archive-path extract-to-dir copy"),
    "export": _fx(container="export"),
    "top": _fx(container="top"),
    "pull": _fx(image="pull"),
    "push": _fx(image="push"),
    "tag": _fx(image="tag"),
    "rmi": _fx(image="untag delete"),
    "import": _fx(image="import tag"),
    "load": _fx(image="load tag untag"),
    "save": _fx(image="save"),
    "build": _fx(image="tag untag delete", builder="prune",
                 container="create start attach die destroy commit"),
    "container prune": _fx(container="destroy prune"),
    "image prune": _fx(image="untag delete prune"),
    "system prune": _fx(container="destroy prune", image="untag delete prune",
                        network="destroy prune", volume="destroy prune", builder="prune"),
    "builder prune": _fx(builder="prune"),
    "network create": _fx(network="create"),
    "network rm": _fx(network="destroy remove"),
    "network connect": _fx(network="connect"),
    "network disconnect": _fx(network="disconnect"),
    "network prune": _fx(network="destroy prune"),
    "volume create": _fx(volume="create"),
    "volume rm": _fx(volume="destroy"),
    "volume prune": _fx(volume="destroy prune"),
}  # fmt: skip
_COMPOSE_AS = {
    "up": ("run", "create", "start", "stop", "rm", "network create", "volume create", "pull",
           "build"),
    "down": ("stop", "rm", "network rm", "volume rm", "rmi"),
    "create": ("create", "network create", "volume create", "pull", "build"),
    "run": ("run", "network create", "volume create", "pull"),
    "start": ("start",), "stop": ("stop",), "restart": ("restart",), "kill": ("kill",),
    "rm": ("rm", "stop"), "pause": ("pause",), "unpause": ("unpause",), "exec": ("exec",),
    "pull": ("pull",), "build": ("build",), "push": ("push",), "cp": ("cp",),
    "scale": ("run", "stop", "rm"),
}  # fmt: skip
# Effects that one call causes once: the first matching event claims them.
_SINGULAR: dict[str, frozenset[tuple[str, str]]] = {
    "run": frozenset({("container", "create"), ("container", "start")}),
    "create": frozenset({("container", "create")}),
    "exec": frozenset({("container", "exec_create")}),
    "rename": frozenset({("container", "rename")}),
    "commit": frozenset({("container", "commit")}),
    "import": frozenset({("image", "import")}),
    "network create": frozenset({("network", "create")}),
    "volume create": frozenset({("volume", "create")}),
}
_LONG_COMMANDS = frozenset({"run", "create", "pull", "push", "build", "import", "load",
                            "save", "commit"})  # fmt: skip
_TIMEOUT_COMMANDS = {"stop": 10, "restart": 10}  # the Engine's default stop timeout
# Lineage: events of a run's own container that it causes while it runs; the
# ones in _LATE only while attached or shortly after the call.
_RUN_LINEAGE = frozenset({"attach", "start", "resize", "connect", "mount"})
_RUN_LATE = frozenset({"die", "kill", "destroy", "disconnect", "unmount"})
# Calls whose stop of a --rm container makes the Engine destroy it.
_AUTOREMOVERS = frozenset({"stop", "kill", "restart"})
_CONTAINER_TARGETS = frozenset({
    "start", "stop", "restart", "kill", "rm", "pause", "unpause", "rename", "update", "exec",
    "attach", "commit", "export", "top", "wait",
})  # fmt: skip


@dataclass(slots=True, eq=False)
class CliCall:
    """One docker CLI execution seen by auditd."""

    time_ns: int
    audit_id: str  # "1795346502.569:15428" (with "node " in front when the log has node=)
    call: DockerCall
    who: Who  # method "auditd": straight from the record
    event_id: str = ""  # trail id of its docker-cli event
    claimed: set[tuple[str, str]] = field(default_factory=set)
    # filled by the Correlator
    expires_ns: int = 0
    names: frozenset[str] = frozenset()  # container names / id prefixes it targets
    refs: frozenset[str] = frozenset()  # normalized image references it names
    objects: frozenset[str] = frozenset()  # network or volume names it names
    effects: Effects = field(default_factory=dict)

    @property
    def command(self) -> str:
        return self.call.command

    @property
    def login_key(self) -> tuple[int | None, str | None]:
        return (self.who.auid, self.who.login)


@dataclass(slots=True)
class _Container:
    name: str | None = None
    project: str | None = None  # compose project label
    owner: CliCall | None = None  # the run that created it
    created_ns: int = 0
    attached: bool = False  # owner is a run in the foreground (not -d)
    autoremove: bool = False  # created with --rm: its destroy follows its die


@dataclass(slots=True)
class _Candidate:
    call: CliCall
    evidence: str
    score: int
    sure: bool = True  # False: only the subcommand fitted, or equal candidates were left


class _Lru(OrderedDict[str, _V]):
    """An OrderedDict that forgets its oldest entries beyond `cap`."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def put(self, key: str, value: _V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.cap:
            self.popitem(last=False)


@dataclass(slots=True)
class CorrelationStats:
    attributed: int = 0
    ambiguous: int = 0
    unattributed: int = 0
    calls: int = 0


class Correlator:
    """Recent CLI calls and the matching of Engine events to them (see module docstring)."""

    def __init__(
        self,
        *,
        window_secs: float = 10.0,
        long_window_secs: float = 600.0,
        max_calls: int = 50_000,
        clock_skew_secs: float = 0.0,
    ) -> None:
        self.window_ns = round(window_secs * _NS)
        self.long_window_ns = round(long_window_secs * _NS)
        self.max_calls = max_calls
        self.skew_ns = round(clock_skew_secs * _NS)
        self.stats = CorrelationStats()
        self._calls: deque[CliCall] = deque()  # arrival order
        self._seen: set[str] = set()  # audit ids of the calls in _calls
        self._by_key: dict[str, list[CliCall]] = {}
        # Calls that name nothing an event could be compared with (prune, load,
        # compose with a derived project), or only image references (for image
        # events that carry an id we know no reference of).
        self._anonymous: list[CliCall] = []
        self._ref_only: list[CliCall] = []
        self._hex_targets: list[CliCall] = []  # calls naming a container or image by id
        self._containers: _Lru[_Container] = _Lru(_LINEAGE_CAP)
        self._execs: _Lru[CliCall] = _Lru(_LINEAGE_CAP)  # exec id -> its exec call
        self._images: _Lru[set[str]] = _Lru(_LINEAGE_CAP)  # image id -> normalized refs
        self._image_owner: _Lru[CliCall] = _Lru(_LINEAGE_CAP)
        self._watermark_ns = -1
        self._changed = asyncio.Event() if _has_loop() else None

    @classmethod
    def from_config(cls, config: AuditdConfig) -> Correlator:
        return cls(
            window_secs=config.window_secs,
            long_window_secs=config.long_window_secs,
            max_calls=config.max_cli_calls,
        )

    # ------------------------------------------------------------------ feeding

    def add_call(self, cli: CliCall) -> None:
        """Index a CLI call (read-only commands and calls to other Engines are ignored)."""
        if cli.call.read_only or cli.call.remote or cli.audit_id in self._seen:
            return
        self._prepare(cli)
        self._seen.add(cli.audit_id)
        self._calls.append(cli)
        for key in self._keys_of(cli):
            self._by_key.setdefault(key, []).append(cli)
        pool = self._pool(cli)
        if pool is not None:
            pool.append(cli)
        if any(_is_hex(n) for n in cli.names) or _hex_image_args(cli.call):
            self._hex_targets.append(cli)
        self.stats.calls += 1
        if len(self._calls) > self.max_calls:
            self._drop(self._calls.popleft())

    def running(self, command: str, time_ns: int) -> CliCall | None:
        """The latest call of `command` that may still be at work at `time_ns` (a build)."""
        for cli in reversed(self._calls):
            if cli.command == command and cli.time_ns <= time_ns <= cli.expires_ns:
                return cli
        return None

    def advance(self, watermark_ns: int) -> None:
        """The audit log has been read up to `watermark_ns`: every call before it is in."""
        if watermark_ns > self._watermark_ns:
            self._watermark_ns = watermark_ns
            self._wake()

    def close(self) -> None:
        """No more audit records will come (end of input, source stopped)."""
        self.advance(1 << 62)

    @property
    def watermark_ns(self) -> int:
        return self._watermark_ns

    async def wait_for(self, time_ns: int, timeout: float) -> bool:
        """Wait until the audit log was read past `time_ns`, at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._watermark_ns < time_ns:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event() if _has_loop() else None

    def evict(self, now_ns: int) -> None:
        """Forget calls that can no longer cause an event at `now_ns` or later."""
        calls = self._calls
        while calls and calls[0].expires_ns + _EVICT_MARGIN_NS < now_ns:
            self._drop(calls.popleft())

    def _drop(self, cli: CliCall) -> None:
        self._seen.discard(cli.audit_id)
        for key in self._keys_of(cli):
            _remove(self._by_key, key, cli)
        for pool in (self._pool(cli), self._hex_targets):
            if pool is not None and cli in pool:
                pool.remove(cli)

    def _pool(self, cli: CliCall) -> list[CliCall] | None:
        compose = cli.call.compose
        if compose is not None:
            return None if compose.project_given else self._anonymous
        if cli.names or cli.objects:
            return None
        if not cli.refs:
            return self._anonymous
        return None if cli.command in ("run", "create") else self._ref_only

    # ------------------------------------------------------------------ matching

    def attribute(self, event: Event) -> None:
        """Fill `who` (and `config` of creates/execs) of an Engine event, in place."""
        if event.source != "docker":
            return
        claimed = event.who.claimed  # a label's claim stays beside the evidence
        self._observe(event)
        candidates = self._candidates(event)
        chosen = self._choose(event, candidates)
        if chosen is not None:
            self._apply(event, chosen)
        self._remember(event, chosen.call if chosen else None)
        if claimed is not None:
            event.who.claimed = claimed

    def _observe(self, event: Event) -> None:
        """Learn names of container ids and references of image ids before matching."""
        if event.type == "container" and event.actor.id:
            info = self._container(event.actor.id)
            if event.actor.name:
                info.name = event.actor.name
            for key, _evidence, _score in _project_keys(event):
                info.project = key.removeprefix("project:")
        elif event.type == "image" and event.actor.id.startswith("sha256:"):
            name = event.actor.name or ""
            if name and not name.startswith("sha256:"):
                refs = self._images.get(event.actor.id) or set()
                refs.add(normalize_image_ref(name))
                self._images.put(event.actor.id, refs)

    def _container(self, container_id: str) -> _Container:
        info = self._containers.get(container_id) or _Container()
        self._containers.put(container_id, info)
        return info

    def _candidates(self, event: Event) -> list[_Candidate]:
        found: dict[int, _Candidate] = {}
        for candidate in itertools.chain(
            self._lineage(event), self._identified(event), self._fallback(event)
        ):
            key = id(candidate.call)
            best = found.get(key)
            if best is None or candidate.score > best.score:
                found[key] = candidate
        return list(found.values())

    def _lineage(self, event: Event) -> Iterator[_Candidate]:
        exec_id = event.attributes.get("execID")
        if event.type == "container" and exec_id and event.action != "exec_create":
            owner = self._execs.get(exec_id)
            if owner is not None:
                yield _Candidate(owner, "exec-id", _HIGH)
                return
        container_id = self._event_container(event)
        info = self._containers.get(container_id) if container_id else None
        if info is not None and info.owner is not None:
            score = self._lineage_score(event, info, info.owner)
            if score:
                yield _Candidate(info.owner, "container", score)
        if event.type == "image" and (event.actor.name or "sha256:").startswith("sha256:"):
            # An event naming only the image id (import, untag, delete): the call whose
            # other event (a tag) named this id. Events with a reference go by it.
            image_owner = self._image_owner.get(event.actor.id)
            if image_owner is not None and self._usable(image_owner, event):
                yield _Candidate(image_owner, "id", _HIGH)

    def _lineage_score(self, event: Event, info: _Container, owner: CliCall) -> int:
        """A run's own container: its start right after its create is the run's; its end
        is the run's only while attached (the user's session) or soon after (the command
        exited at once), and ranks below a call that names the container (a `docker
        stop` meanwhile). A restart much later (a restart policy) is nobody's."""
        action = event.action
        if not _causes(owner, event):  # (a run's --rm is among its effects)
            return 0
        soon = event.time_ns <= info.created_ns + self.window_ns
        if action in _RUN_LINEAGE:
            return _HIGH if soon or (info.attached and action == "resize") else 0
        if action == "kill" and not info.attached:
            return 0  # only an attached run forwards signals
        if action in _RUN_LATE and (info.attached or soon):
            return _IMAGE
        return 0

    def _identified(self, event: Event) -> Iterator[_Candidate]:
        for key, evidence, score in self._event_keys(event):
            for cli in self._by_key.get(key, ()):
                if self._usable(cli, event):
                    yield _Candidate(cli, evidence, score)
        for cli in self._hex_targets:
            if self._names_by_id(cli, event) and self._usable(cli, event):
                yield _Candidate(cli, "id", _HIGH)

    def _names_by_id(self, cli: CliCall, event: Event) -> bool:
        """The call names the event's container (or image) by an id prefix."""
        if event.type == "image":
            digest = event.actor.id.removeprefix("sha256:")
            return any(digest.startswith(r) for r in _hex_image_args(cli.call))
        container_id = self._event_container(event)
        if container_id is None:
            return False
        return any(_is_hex(n) and container_id.startswith(n) for n in cli.names)

    def _fallback(self, event: Event) -> Iterator[_Candidate]:
        """Calls whose command fits and that name nothing this event could be compared with."""
        pools = (self._anonymous, self._ref_only) if event.type == "image" else (self._anonymous,)
        for pool in pools:
            for cli in pool:
                if self._usable(cli, event) and not self._comparable(cli, event):
                    yield _Candidate(cli, "subcommand", _SUBCOMMAND, sure=False)

    def _comparable(self, cli: CliCall, event: Event) -> bool:
        """Whether the call names something of the kind this event carries."""
        compose = cli.call.compose
        if compose is not None:
            # A derived project may be overridden (COMPOSE_PROJECT_NAME, `name:`), but
            # never absent: an object compose did not make is no fallback of it.
            return compose.project_given or not self._compose_made(event)
        if event.type == "container":
            return bool(cli.names) or (bool(cli.refs) and cli.command in ("run", "create"))
        if event.type == "image":
            if not cli.refs:
                return False
            named = event.actor.name and not event.actor.name.startswith("sha256:")
            return bool(named) or event.actor.id in self._images
        if event.type in ("network", "volume"):
            if event.action in ("connect", "disconnect", "mount", "unmount"):
                return bool(cli.names or cli.objects or cli.refs)
            return bool(cli.objects)
        return True

    def _compose_made(self, event: Event) -> bool:
        """Whether compose could have made this: its containers (and their network and
        volume attachments) carry the project label; its networks and volumes are
        named PROJECT_NAME. Images and the rest: no way to tell."""
        container_id = self._event_container(event)
        if event.type == "container" or (container_id and event.type in ("network", "volume")):
            info = self._containers.get(container_id or "")
            labelled = event.type == "container" and any(_project_keys(event))
            return labelled or (info is not None and info.project is not None)
        if event.type in ("network", "volume"):
            return "_" in (event.actor.name or event.actor.id)
        return True

    def _usable(self, cli: CliCall, event: Event) -> bool:
        """Direct matches; a run's container after its create goes by lineage."""
        if cli.command == "run" and event.type != "image" and event.action != "create":
            return False
        if event.action == "destroy" and cli.command in _AUTOREMOVERS:
            info = self._containers.get(event.actor.id)  # removed by --rm, if it had it
            if info is None or not info.autoremove:
                return False
        return _causes(cli, event) and self._in_window(cli, event)

    def _in_window(self, cli: CliCall, event: Event) -> bool:
        return cli.time_ns <= event.time_ns + self.skew_ns and event.time_ns <= cli.expires_ns

    def _event_container(self, event: Event) -> str | None:
        if event.type == "container":
            return event.actor.id or None
        container = event.attributes.get("container")
        return container if isinstance(container, str) and container else None

    def _event_keys(self, event: Event) -> Iterator[tuple[str, str, int]]:
        """(index key, evidence, score) for the identifiers this event carries."""
        if event.type == "container":
            if event.actor.name:
                yield f"name:{event.actor.name}", "name", _HIGH
            old = event.attributes.get("oldName")
            if isinstance(old, str) and old:
                yield f"name:{old.lstrip('/')}", "name", _HIGH
            if event.actor.image and event.action == "create":  # later: by container id
                yield f"run-image:{normalize_image_ref(event.actor.image)}", "image", _IMAGE
            yield from _project_keys(event)
        elif event.type == "image":
            yield from self._image_keys(event)
        elif event.type in ("network", "volume"):
            yield from self._object_keys(event)

    def _image_keys(self, event: Event) -> Iterator[tuple[str, str, int]]:
        refs: set[str] = set()
        name = event.actor.name or ""
        if name and not name.startswith("sha256:"):
            refs.add(normalize_image_ref(name))
        if not event.actor.id.startswith("sha256:") and event.actor.id:
            refs.add(normalize_image_ref(event.actor.id))  # pull: the id is the reference
        known = self._images.get(event.actor.id)
        if not refs and known:
            refs = set(known)  # an event naming only the id: the references it had
        for ref in refs:
            yield f"ref:{ref}", "image", _HIGH

    def _object_keys(self, event: Event) -> Iterator[tuple[str, str, int]]:
        container_id = self._event_container(event)
        if container_id:  # connect/disconnect/mount/unmount: the container decides
            info = self._containers.get(container_id)
            if info is not None:
                if info.name:
                    yield f"name:{info.name}", "name", _HIGH
                if info.project:
                    yield f"project:{info.project}", "compose-project", _HIGH
            return
        kind = event.type
        name = event.actor.name or event.actor.id
        if name:
            yield f"{kind}:{name}", "name", _HIGH
            for prefix in _project_prefixes(name):
                yield f"project:{prefix}", "compose-project", _HIGH

    def _choose(self, event: Event, candidates: list[_Candidate]) -> _Candidate | None:
        effect = (event.type, event.action)
        # A call that already caused its one create (start, exec_create …) causes no other.
        candidates = [c for c in candidates if effect not in c.call.claimed]
        if not candidates:
            event.who = self._unknown(event.who)
            self.stats.unattributed += event.who.method == "unknown"
            return None
        best = max(c.score for c in candidates)
        top = _agreeing(event, [c for c in candidates if c.score == best])
        singular = any(effect in _SINGULAR.get(c.call.command, ()) for c in top)
        logins = {c.call.login_key for c in top}
        if len(logins) > 1:
            names = sorted({_login_name(c.call.who) for c in top})
            event.who = self._unknown(event.who).model_copy(update={"candidates": names})
            self.stats.ambiguous += 1
            return None
        # The same login either way: FIFO for a singular effect (calls are served in
        # order), else the closest call before the event.
        top.sort(key=lambda c: c.call.time_ns)
        chosen = top[0] if singular else top[-1]
        if len(top) > 1:
            chosen = _Candidate(chosen.call, chosen.evidence, chosen.score, sure=False)
        if effect in _SINGULAR.get(chosen.call.command, ()):
            chosen.call.claimed.add(effect)
        self.stats.attributed += 1
        return chosen

    def _unknown(self, who: Who) -> Who:
        # A declared who (label, intent) stays; otherwise the method says we do not know.
        return who if who.method not in ("unknown", "") else Who(method="unknown")

    def _apply(self, event: Event, chosen: _Candidate) -> None:
        cli = chosen.call
        event.who = cli.who.model_copy(
            update={
                "method": "auditd-cli",
                "matched_by": chosen.evidence,
                "confidence": "high" if chosen.sure else "medium",
                "candidates": None,
            }
        )
        if event.type != "container":
            return
        if event.action == "create" and cli.command in ("run", "create"):
            argv_config = container_config(cli.call)
            if argv_config is not None:
                event.config = _merged(event.config, argv_config)
        elif event.action in ("exec_create", "exec_start") and cli.command == "exec":
            options = exec_options(cli.call)
            if options is not None and not event.config:
                event.config = options.model_dump(mode="json")

    def _remember(self, event: Event, owner: CliCall | None) -> None:
        """Lineage for the events that follow; forget what is gone."""
        if event.type == "container":
            self._remember_container(event, owner)
        elif event.type == "image" and owner is not None and event.actor.id:
            self._image_owner.put(event.actor.id, owner)

    def _remember_container(self, event: Event, owner: CliCall | None) -> None:
        action, container_id = event.action, event.actor.id
        if action == "create" and owner is not None and owner.command == "run":
            info = self._container(container_id)
            info.owner, info.created_ns = owner, event.time_ns
            info.attached = not owner.call.flag("detach")
            info.autoremove = owner.call.flag("rm")
        elif action == "exec_create" and owner is not None:
            exec_id = event.attributes.get("execID")
            if isinstance(exec_id, str) and exec_id:
                self._execs.put(exec_id, owner)
        elif action == "exec_die":
            self._execs.pop(event.attributes.get("execID", ""), None)
        elif action == "destroy":
            self._containers.pop(container_id, None)

    # ------------------------------------------------------------------ calls

    def _prepare(self, cli: CliCall) -> None:
        call = cli.call
        cli.names = frozenset(_container_names(call))
        cli.refs = frozenset(normalize_image_ref(r) for r in _image_refs(call))
        cli.objects = frozenset(_object_names(call))
        cli.effects = _effects(call)
        cli.expires_ns = cli.time_ns + self._window_ns(call)

    def _window_ns(self, call: DockerCall) -> int:
        if call.command in _LONG_COMMANDS or call.compose is not None:
            return self.long_window_ns
        timeout = _TIMEOUT_COMMANDS.get(call.command)
        if timeout is not None or (call.command == "rm" and call.flag("force")):
            given = call.opt("time") or call.opt("timeout")
            seconds = int(given) if given and given.lstrip("-").isdigit() else timeout or 10
            return self.window_ns + max(seconds, 0) * _NS
        return self.window_ns

    def _keys_of(self, cli: CliCall) -> Iterator[str]:
        call = cli.call
        for name in cli.names:
            yield f"name:{name}"
        if call.command in ("run", "create") and not call.name:
            for ref in cli.refs:
                yield f"run-image:{ref}"
        for ref in cli.refs:
            yield f"ref:{ref}"
        kind = "volume" if call.command.startswith("volume") else "network"
        for name in cli.objects:
            yield f"{kind}:{name}"
        if call.compose is not None and call.compose.project:
            yield f"project:{call.compose.project}"


# ---------------------------------------------------------------------- helpers


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _remove(index: dict[str, list[CliCall]], key: str, cli: CliCall) -> None:
    calls = index.get(key)
    if calls is None:
        return
    try:
        calls.remove(cli)
    except ValueError:
        return
    if not calls:
        del index[key]


def _is_hex(text: str) -> bool:
    return 1 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


def _login_name(who: Who) -> str:
    if who.login:
        return who.login
    return f"auid {who.auid}" if who.auid is not None else "unset"


def _commands_of(call: DockerCall) -> list[str]:
    if call.compose is not None:
        return list(_COMPOSE_AS.get(call.compose.subcommand, ()))
    return [call.command]


def _effects(call: DockerCall) -> Effects:
    # The flags that change what a command causes; the rest do not matter here.
    flags = tuple(call.flag(f) for f in ("rm", "force", "volumes", "attach"))
    return _effects_of(tuple(_commands_of(call)), call.command, flags)


@functools.cache
def _effects_of(commands: tuple[str, ...], command: str, flags: tuple[bool, ...]) -> Effects:
    """Effects of a command with those flags (a few dozen combinations: cached)."""
    removes, force, volumes, attach = flags
    merged: dict[str, set[str]] = {}
    for name in commands:
        for kind, actions in _BASE_EFFECTS.get(name, {}).items():
            merged.setdefault(kind, set()).update(actions)
    container = merged.setdefault("container", set())
    if command == "run" and removes:
        container.add("destroy")
    if command == "rm" and force:
        container.update(("kill", "die"))
        merged.setdefault("network", set()).add("disconnect")
        merged.setdefault("volume", set()).add("unmount")
    if command == "rm" and volumes:
        merged.setdefault("volume", set()).add("destroy")
    if command == "start" and attach:
        container.update(("attach", "die"))
    return {k: frozenset(v) for k, v in merged.items()}


def _causes(cli: CliCall, event: Event) -> bool:
    return event.action in cli.effects.get(event.type, ())


def _container_names(call: DockerCall) -> list[str]:
    command, args = call.command, call.args
    if command in ("run", "create"):
        return [call.name.lstrip("/")] if call.name else []
    if command == "exec":
        return list(args[:1])
    if command == "rename":
        return list(args[:2])
    if command == "commit":
        return list(args[:1])
    if command in ("cp",):
        return [a.split(":", 1)[0] for a in args if _is_container_path(a)]
    if command in _CONTAINER_TARGETS:
        return list(args)
    if command in ("network connect", "network disconnect"):
        return list(args[1:2])
    return []


def _is_container_path(arg: str) -> bool:
    head, colon, _ = arg.partition(":")
    return bool(colon and head and not head.startswith(("/", ".", "~")))


def _image_refs(call: DockerCall) -> list[str]:
    command, args = call.command, call.args
    if command in ("run", "create", "pull", "push"):
        return list(args[:1])
    if command == "tag":
        return list(args[1:2])
    if command == "import":
        return list(args[1:2])
    if command in ("rmi", "save"):
        return [a for a in args if not _is_hex(a)]
    if command == "commit":
        return list(args[1:2])
    if command == "build":
        return list(call.options.get("tag", ()))
    return []


def _object_names(call: DockerCall) -> list[str]:
    command, args = call.command, call.args
    if command in ("network create", "volume create"):
        given = call.opt("name")
        return [given] if given else list(args[:1])
    if command in ("network rm", "volume rm"):
        return list(args)
    if command in ("network connect", "network disconnect"):
        return list(args[:1])
    return []


def _hex_image_args(call: DockerCall) -> list[str]:
    return [a for a in call.args if _is_hex(a)] if call.command in ("rmi", "save") else []


def _project_keys(event: Event) -> Iterator[tuple[str, str, int]]:
    labels = event.attributes.get("labels")
    if isinstance(labels, dict):
        project = labels.get("com.docker.compose.project")
        if isinstance(project, str) and project:
            yield f"project:{project}", "compose-project", _HIGH


def _project_prefixes(name: str) -> Iterable[str]:
    """Compose names networks and volumes PROJECT_NAME: every split at `_` is a guess."""
    parts = name.split("_")
    return ("_".join(parts[:i]) for i in range(1, len(parts)))


def _agreeing(event: Event, top: list[_Candidate]) -> list[_Candidate]:
    """Of equal candidates for a container's create, those whose argv agrees with what
    was created (a refused call made nothing); all of them when none or all agree."""
    if len(top) < 2 or event.type != "container" or event.action != "create":
        return top
    agree = [c for c in top if argv_agrees(c.call.call, event.config, event.launch)]
    return agree or top


def _merged(current: dict[str, object], argv_config: ContainerConfig) -> dict[str, object]:
    if current.get("origin") == "inspect":
        inspect = ContainerConfig.model_validate(current)
        return merge_configs(inspect, argv_config).as_event_config()
    return argv_config.as_event_config()


# ---------------------------------------------------------------------- stage


class Attribution:
    """Pipeline Stage: fills `who` (and argv `config`) of Docker events before they are written.

    Live (`hold_secs` > 0), a batch waits until the audit log has been read past
    its newest Docker event, or until that event is `hold_secs` old, whichever
    comes first; then every Docker event of the batch is attributed. Offline
    ingest attributes while merging the files and needs no hold.
    """

    def __init__(
        self,
        correlator: Correlator,
        *,
        hold_secs: float = 1.0,
        clock: Callable[[], int] = time.time_ns,
        coverage: Coverage | None = None,
    ) -> None:
        self.correlator = correlator
        self.hold_ns = round(hold_secs * _NS)
        self._clock = clock
        self.coverage = coverage  # None: every event counts as covered

    async def before_write(self, batch: list[Event]) -> list[Event]:
        docker = [e for e in batch if e.source == "docker" and e.who.method != "auditd-cli"]
        if not docker:
            return batch
        newest = max(e.time_ns for e in docker)
        if self.hold_ns > 0:
            wait = (newest + self.hold_ns - self._clock()) / _NS
            if wait > 0:
                await self.correlator.wait_for(newest, wait)
        for event in sorted(docker, key=lambda e: e.time_ns):
            self.correlator.attribute(event)
            mark_build_step(event, self.correlator)
            mark_uncovered(event, self.coverage)
        self.correlator.evict(min(e.time_ns for e in docker))
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        return None
