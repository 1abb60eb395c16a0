"""`Correlator`: matches the Engine's events to the docker CLI calls auditd recorded
(finding the candidates here; `verdict` chooses among them), and remembers lineage
(which call made which container, exec and image).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator

from config.models import AuditdConfig
from listener.argv import DockerCall, normalize_image_ref
from listener.correlate.calls import (
    DERIVED_CAP,
    DerivedCall,
    call_keys,
    cli_causes,
    derive_call,
    has_loop,
    hex_image_args,
    is_hex,
    project_keys,
    project_prefixes,
    remove_call,
)
from listener.correlate.effects import (
    AUTOREMOVERS,
    EVICT_MARGIN_NS,
    LINEAGE_CAP,
    LONG_COMMANDS,
    NS,
    RANK_HIGH,
    RANK_IMAGE,
    RANK_SUBCOMMAND,
    REFS_PER_IMAGE,
    RUN_LATE,
    RUN_LINEAGE,
    TIMEOUT_COMMANDS,
    Candidate,
    CliCall,
    Container,
    CorrelationStats,
    Lru,
)
from listener.correlate.verdict import apply_choice, choose
from listener.model.event import Event


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
        self.window_ns = round(window_secs * NS)
        self.long_window_ns = round(long_window_secs * NS)
        self.max_calls = max_calls
        self.skew_ns = round(clock_skew_secs * NS)
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
        self._containers: Lru[Container] = Lru(LINEAGE_CAP)
        self._execs: Lru[CliCall] = Lru(LINEAGE_CAP)  # exec id -> its exec call
        # image id -> its normalized references, oldest first (a dict as an ordered set)
        self._images: Lru[dict[str, None]] = Lru(LINEAGE_CAP)
        self._image_owner: Lru[CliCall] = Lru(LINEAGE_CAP)
        self._watermark_ns = -1
        self._calls_derived: dict[int, DerivedCall] = {}  # id(DockerCall) -> see _derived
        self._changed = asyncio.Event() if has_loop() else None
        # Told the time a caller waits for (the live tail sends an audit barrier then).
        self.on_wait: Callable[[int], None] | None = None

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
        derived = self._prepare(cli)
        self._seen.add(cli.audit_id)
        self._calls.append(cli)
        by_key = self._by_key
        for key in derived.keys:
            by_key.setdefault(key, []).append(cli)
        pool = self._pool(cli)
        if pool is not None:
            pool.append(cli)
        if derived.hex_target:
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
        if self._watermark_ns < time_ns and self.on_wait is not None:
            self.on_wait(time_ns)
        while self._watermark_ns < time_ns:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return False
        return True

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event() if has_loop() else None

    def evict(self, now_ns: int) -> None:
        """Forget calls that can no longer cause an event at `now_ns` or later."""
        calls = self._calls
        while calls and calls[0].expires_ns + EVICT_MARGIN_NS < now_ns:
            self._drop(calls.popleft())

    def _drop(self, cli: CliCall) -> None:
        self._seen.discard(cli.audit_id)
        for key in self._keys_of(cli):
            remove_call(self._by_key, key, cli)
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
        chosen = choose(event, candidates, self.stats)
        if chosen is not None:
            apply_choice(event, chosen)
        self._remember(event, chosen.call if chosen else None)
        if claimed is not None:
            event.who.claimed = claimed

    def _observe(self, event: Event) -> None:
        """Learn names of container ids and references of image ids before matching."""
        if event.type == "container" and event.actor.id:
            info = self._container(event.actor.id)
            if event.actor.name:
                info.name = event.actor.name
            for key, _evidence, _score in project_keys(event):
                info.project = key.removeprefix("project:")
        elif event.type == "image" and event.actor.id.startswith("sha256:"):
            name = event.actor.name or ""
            if name and not name.startswith("sha256:"):
                refs = self._images.get(event.actor.id) or {}
                ref = normalize_image_ref(name)
                refs.pop(ref, None)
                refs[ref] = None  # the newest last
                if len(refs) > REFS_PER_IMAGE:  # one image id retagged by every cached build
                    del refs[next(iter(refs))]
                self._images.put(event.actor.id, refs)

    def _container(self, container_id: str) -> Container:
        info = self._containers.get(container_id) or Container()
        self._containers.put(container_id, info)
        return info

    def _candidates(self, event: Event) -> list[Candidate]:
        found: dict[int, Candidate] = {}
        for candidate in itertools.chain(
            self._lineage(event), self._identified(event), self._fallback(event)
        ):
            key = id(candidate.call)
            best = found.get(key)
            if best is None or candidate.score > best.score:
                found[key] = candidate
        return list(found.values())

    def _lineage(self, event: Event) -> Iterator[Candidate]:
        exec_id = event.attributes.get("execID")
        if event.type == "container" and exec_id and event.action != "exec_create":
            owner = self._execs.get(exec_id)
            if owner is not None:
                yield Candidate(owner, "exec-id", RANK_HIGH)
                return
        container_id = self._event_container(event)
        info = self._containers.get(container_id) if container_id else None
        if info is not None and info.owner is not None:
            score = self._lineage_score(event, info, info.owner)
            if score:
                yield Candidate(info.owner, "container", score)
        if event.type == "image" and (event.actor.name or "sha256:").startswith("sha256:"):
            # An event naming only the image id (import, untag, delete): the call whose
            # other event (a tag) named this id. Events with a reference go by it.
            image_owner = self._image_owner.get(event.actor.id)
            if image_owner is not None and self._usable(image_owner, event):
                yield Candidate(image_owner, "id", RANK_HIGH)

    def _lineage_score(self, event: Event, info: Container, owner: CliCall) -> int:
        """A run's own container: its start right after its create is the run's; its end
        is the run's only while attached (the user's session) or soon after (the command
        exited at once), and ranks below a call that names the container (a `docker
        stop` meanwhile). A restart much later (a restart policy) is nobody's."""
        action = event.action
        if not cli_causes(owner, event):  # (a run's --rm is among its effects)
            return 0
        soon = event.time_ns <= info.created_ns + self.window_ns
        if action in RUN_LINEAGE:
            return RANK_HIGH if soon or (info.attached and action == "resize") else 0
        if action == "kill" and not info.attached:
            return 0  # only an attached run forwards signals
        if action in RUN_LATE and (info.attached or soon):
            return RANK_IMAGE
        return 0

    def _identified(self, event: Event) -> Iterator[Candidate]:
        for key, evidence, score in self._event_keys(event):
            for cli in self._by_key.get(key, ()):
                if self._usable(cli, event):
                    yield Candidate(cli, evidence, score)
        for cli in self._hex_targets:
            if self._names_by_id(cli, event) and self._usable(cli, event):
                yield Candidate(cli, "id", RANK_HIGH)

    def _names_by_id(self, cli: CliCall, event: Event) -> bool:
        """The call names the event's container (or image) by an id prefix."""
        if event.type == "image":
            digest = event.actor.id.removeprefix("sha256:")
            return any(digest.startswith(r) for r in hex_image_args(cli.call))
        container_id = self._event_container(event)
        if container_id is None:
            return False
        return any(is_hex(n) and container_id.startswith(n) for n in cli.names)

    def _fallback(self, event: Event) -> Iterator[Candidate]:
        """Calls whose command fits and that name nothing this event could be compared with."""
        pools = (self._anonymous, self._ref_only) if event.type == "image" else (self._anonymous,)
        for pool in pools:
            for cli in pool:
                if self._usable(cli, event) and not self._comparable(cli, event):
                    yield Candidate(cli, "subcommand", RANK_SUBCOMMAND, sure=False)

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
            labelled = event.type == "container" and any(project_keys(event))
            return labelled or (info is not None and info.project is not None)
        if event.type in ("network", "volume"):
            return "_" in (event.actor.name or event.actor.id)
        return True

    def _usable(self, cli: CliCall, event: Event) -> bool:
        """Direct matches; a run's container after its create goes by lineage."""
        if cli.command == "run" and event.type != "image" and event.action != "create":
            return False
        if event.action == "destroy" and cli.command in AUTOREMOVERS:
            info = self._containers.get(event.actor.id)  # removed by --rm, if it had it
            if info is None or not info.autoremove:
                return False
        return cli_causes(cli, event) and self._in_window(cli, event)

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
                yield f"name:{event.actor.name}", "name", RANK_HIGH
            old = event.attributes.get("oldName")
            if isinstance(old, str) and old:
                yield f"name:{old.lstrip('/')}", "name", RANK_HIGH
            if event.actor.image and event.action == "create":  # later: by container id
                yield f"run-image:{normalize_image_ref(event.actor.image)}", "image", RANK_IMAGE
            yield from project_keys(event)
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
            yield f"ref:{ref}", "image", RANK_HIGH

    def _object_keys(self, event: Event) -> Iterator[tuple[str, str, int]]:
        container_id = self._event_container(event)
        info = self._containers.get(container_id) if container_id else None
        if info is not None:  # connect/disconnect/mount/unmount: the container decides
            if info.name:
                yield f"name:{info.name}", "name", RANK_HIGH
            if info.project:
                yield f"project:{info.project}", "compose-project", RANK_HIGH
            return
        # A container not seen yet (the Engine orders each object's events, not two
        # objects': compose v1's disconnect can come before its container's create) or
        # not at all: the network or volume named decides, as for its own events.
        kind = event.type
        name = event.actor.name or event.actor.id
        if name:
            yield f"{kind}:{name}", "name", RANK_HIGH
            for prefix in project_prefixes(name):
                yield f"project:{prefix}", "compose-project", RANK_HIGH

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

    def _prepare(self, cli: CliCall) -> DerivedCall:
        """Fill what the correlator reads of a call from its parsed argv."""
        derived = self._derived(cli.call)
        cli.names, cli.refs, cli.objects = derived.names, derived.refs, derived.objects
        cli.effects = derived.effects
        cli.expires_ns = cli.time_ns + derived.window_ns
        return derived

    def _derived(self, call: DockerCall) -> DerivedCall:
        """What a call's argv alone decides, worked out once per `DockerCall`: the
        converter hands out the same object for the same argv and working directory
        (a host runs the same commands over and over). Kept with its call, so an id
        seen again is that call's."""
        known = self._calls_derived.get(id(call))
        if known is not None and known.call is call:
            return known
        derived = derive_call(call, self._window_ns(call))
        if len(self._calls_derived) >= DERIVED_CAP:
            self._calls_derived.clear()
        self._calls_derived[id(call)] = derived
        return derived

    def _window_ns(self, call: DockerCall) -> int:
        if call.command in LONG_COMMANDS or call.compose is not None:
            return self.long_window_ns
        timeout = TIMEOUT_COMMANDS.get(call.command)
        if timeout is not None or (call.command == "rm" and call.flag("force")):
            given = call.opt("time") or call.opt("timeout")
            seconds = int(given) if given and given.lstrip("-").isdigit() else timeout or 10
            return self.window_ns + max(seconds, 0) * NS
        return self.window_ns

    def _keys_of(self, cli: CliCall) -> Iterator[str]:
        return call_keys(cli.call, cli.names, cli.refs, cli.objects)
