"""What each docker CLI command does to the Engine's objects (its effects), and the
records the correlator keeps: calls, containers, candidates.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TypeVar

from listener.argv import DockerCall
from listener.model.event import Who

NS = 1_000_000_000
# Ranks of evidence: an identifier or the lineage of a call's own steps; an image
# (run without --name) or the end of a run's container; only the subcommand.
RANK_HIGH, RANK_IMAGE, RANK_SUBCOMMAND = 3, 2, 1
LINEAGE_CAP = 20_000  # containers / execs / images remembered for lineage
REFS_PER_IMAGE = 256  # references remembered per image id (the newest)
EVICT_MARGIN_NS = 60 * NS

Effects = dict[str, frozenset[str]]
_V = TypeVar("_V")


def _fx(**types: str) -> Effects:
    return {t: frozenset(actions.split()) for t, actions in types.items()}


# What each command can cause, by event type. Flag-dependent effects are added
# in `effects_of_call`. Volume/network attach/detach of a container come with it.
BASE_EFFECTS: dict[str, Effects] = {
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
COMPOSE_AS = {
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
SINGULAR: dict[str, frozenset[tuple[str, str]]] = {
    "run": frozenset({("container", "create"), ("container", "start")}),
    "create": frozenset({("container", "create")}),
    "exec": frozenset({("container", "exec_create")}),
    "rename": frozenset({("container", "rename")}),
    "commit": frozenset({("container", "commit")}),
    "import": frozenset({("image", "import")}),
    "network create": frozenset({("network", "create")}),
    "volume create": frozenset({("volume", "create")}),
}
LONG_COMMANDS = frozenset({"run", "create", "pull", "push", "build", "import", "load",
                            "save", "commit"})  # fmt: skip
TIMEOUT_COMMANDS = {"stop": 10, "restart": 10}  # the Engine's default stop timeout
# Lineage: events of a run's own container that it causes while it runs; the
# ones in RUN_LATE only while attached or shortly after the call.
RUN_LINEAGE = frozenset({"attach", "start", "resize", "connect", "mount"})
RUN_LATE = frozenset({"die", "kill", "destroy", "disconnect", "unmount"})
# Calls whose stop of a --rm container makes the Engine destroy it.
AUTOREMOVERS = frozenset({"stop", "kill", "restart"})
CONTAINER_TARGETS = frozenset({
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
class Container:
    name: str | None = None
    project: str | None = None  # compose project label
    owner: CliCall | None = None  # the run that created it
    created_ns: int = 0
    attached: bool = False  # owner is a run in the foreground (not -d)
    autoremove: bool = False  # created with --rm: its destroy follows its die


@dataclass(slots=True)
class Candidate:
    call: CliCall
    evidence: str
    score: int
    sure: bool = True  # False: only the subcommand fitted, or equal candidates were left


class Lru(OrderedDict[str, _V]):
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
