"""What the docker and compose CLIs accept: global and per-command flags, aliases,
management commands, and which commands only read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Spec:
    """Flags of one command: long name -> takes a value; shorthand -> long name."""

    values: frozenset[str]
    bools: frozenset[str]
    short: Mapping[str, str]
    interspersed: bool = True


def make_spec(values: str = "", bools: str = "", *, interspersed: bool = True) -> Spec:
    """Build a spec from words like `"c=cpu-shares name"` (shorthand=long, or long)."""
    short: dict[str, str] = {}

    def longs(text: str) -> frozenset[str]:
        names = set()
        for word in text.split():
            letter, _, name = word.rpartition("=")
            if letter:
                short[letter] = name
            names.add(name)
        return frozenset(names)

    value_names, bool_names = longs(values), longs(bools)
    short.setdefault("h", "help")
    return Spec(value_names, bool_names | {"help"}, short, interspersed)


# docker (root): global options come before the command.
GLOBAL = make_spec(
    "config c=context H=host l=log-level tlscacert tlscert tlskey",
    "D=debug tls tlsverify v=version",
    interspersed=False,
)
_CREATE_VALUES = (
    "add-host annotation a=attach blkio-weight blkio-weight-device cap-add cap-drop "
    "cgroup-parent cgroupns cidfile cpu-count cpu-percent cpu-period cpu-quota cpu-rt-period "
    "cpu-rt-runtime c=cpu-shares cpus cpuset-cpus cpuset-mems device device-cgroup-rule "
    "device-read-bps device-read-iops device-write-bps device-write-iops dns dns-opt "
    "dns-option dns-search domainname entrypoint e=env env-file expose gpus group-add "
    "health-cmd health-interval health-retries health-start-period health-start-interval "
    "health-timeout h=hostname io-maxbandwidth io-maxiops ip ip6 ipc isolation kernel-memory "
    "l=label label-file link link-local-ip log-driver log-opt mac-address m=memory "
    "memory-reservation memory-swap memory-swappiness mount name network net network-alias "
    "net-alias oom-score-adj pid pids-limit platform p=publish pull restart runtime "
    "security-opt shm-size stop-signal stop-timeout storage-opt sysctl tmpfs ulimit u=user "
    "userns uts v=volume volume-driver volumes-from w=workdir credentialspec init-path "
    "chroot cpu-rt-runtime"
)
_CREATE_BOOLS = (
    "disable-content-trust init i=interactive no-healthcheck oom-kill-disable "
    "P=publish-all privileged q=quiet read-only t=tty use-api-socket"
)
_CREATE = make_spec(_CREATE_VALUES, _CREATE_BOOLS, interspersed=False)
_RUN = make_spec(_CREATE_VALUES + " detach-keys", _CREATE_BOOLS + " d=detach rm sig-proxy",
             interspersed=False)  # fmt: skip
_EXEC = make_spec("detach-keys e=env env-file u=user w=workdir",
              "d=detach i=interactive privileged t=tty", interspersed=False)  # fmt: skip
_UPDATE = make_spec(
    "blkio-weight cpu-period cpu-quota cpu-rt-period cpu-rt-runtime c=cpu-shares cpus "
    "cpuset-cpus cpuset-mems kernel-memory m=memory memory-reservation memory-swap "
    "pids-limit restart"
)
_BUILD = make_spec(
    "add-host allow build-arg build-context builder cache-from cache-to cgroup-parent "
    "cpu-period cpu-quota c=cpu-shares cpuset-cpus cpuset-mems f=file iidfile isolation "
    "label m=memory memory-swap metadata-file network o=output platform progress secret "
    "security-opt shm-size ssh t=tag target ulimit annotation attest call provenance sbom",
    "check compress disable-content-trust force-rm load no-cache no-cache-filter pull push "
    "q=quiet rm squash stream debug",
)
_PRUNE = make_spec("filter", "a=all f=force volumes")
SPECS: dict[str, Spec] = {
    "run": _RUN,
    "create": _CREATE,
    "exec": _EXEC,
    "update": _UPDATE,
    "build": _BUILD,
    "start": make_spec("checkpoint checkpoint-dir detach-keys", "a=attach i=interactive"),
    "stop": make_spec("s=signal t=time timeout"),
    "restart": make_spec("s=signal t=time timeout"),
    "kill": make_spec("s=signal"),
    "rm": make_spec("", "f=force l=link v=volumes"),
    "pause": make_spec(),
    "unpause": make_spec(),
    "rename": make_spec(),
    "wait": make_spec("condition"),
    "attach": make_spec("detach-keys", "no-stdin sig-proxy"),
    "commit": make_spec("a=author c=change m=message", "p=pause"),
    "cp": make_spec("", "a=archive L=follow-link q=quiet"),
    "export": make_spec("o=output"),
    "top": make_spec(interspersed=False),
    "logs": make_spec("since n=tail until", "details f=follow t=timestamps"),
    "diff": make_spec(),
    "port": make_spec(),
    "stats": make_spec("format", "a=all no-stream no-trunc"),
    "inspect": make_spec("f=format type", "s=size"),
    "ps": make_spec("f=filter format n=last", "a=all l=latest no-trunc q=quiet s=size"),
    "images": make_spec("f=filter format tree", "a=all digests no-trunc q=quiet"),
    "pull": make_spec("platform", "a=all-tags disable-content-trust q=quiet"),
    "push": make_spec("platform", "a=all-tags disable-content-trust q=quiet"),
    "tag": make_spec(),
    "rmi": make_spec("platform", "f=force no-prune"),
    "import": make_spec("c=change m=message platform"),
    "load": make_spec("i=input platform", "q=quiet"),
    "save": make_spec("o=output platform"),
    "history": make_spec("format platform", "H=human no-trunc q=quiet"),
    "events": make_spec("f=filter format since until"),
    "version": make_spec("f=format"),
    "info": make_spec("f=format"),
    "login": make_spec("p=password u=username", "password-stdin"),
    "logout": make_spec(),
    "search": make_spec("f=filter format limit", "no-trunc"),
    "container prune": _PRUNE,
    "image prune": _PRUNE,
    "system prune": _PRUNE,
    "builder prune": make_spec(
        "filter keep-storage max-used-space min-free-space reserved-space", "a=all f=force"
    ),
    "network create": make_spec(
        "aux-address config-from d=driver gateway ip-range ipam-driver ipam-opt label "
        "o=opt scope subnet",
        "attachable config-only ingress internal ipv4 ipv6",
    ),
    "network connect": make_spec("alias driver-opt gw-priority ip ip6 link link-local-ip"),
    "network disconnect": make_spec("", "f=force"),
    "network rm": make_spec("", "f=force"),
    "network prune": _PRUNE,
    "volume create": make_spec(
        "availability d=driver group label limit-bytes o=opt required-bytes scope secret "
        "sharing type name"
    ),
    "volume rm": make_spec("", "f=force"),
    "volume prune": _PRUNE,
    "volume update": make_spec("availability"),
}
DEFAULT_SPEC = make_spec()

# Management command + subcommand (or a top-level alias) -> canonical command.
ALIASES: dict[str, str] = {
    "container attach": "attach", "container commit": "commit", "container cp": "cp",
    "container create": "create", "container diff": "diff", "container exec": "exec",
    "container export": "export", "container inspect": "inspect", "container kill": "kill",
    "container logs": "logs", "container ls": "ps", "container list": "ps",
    "container ps": "ps", "container pause": "pause", "container port": "port",
    "container rename": "rename", "container restart": "restart", "container rm": "rm",
    "container remove": "rm", "container run": "run", "container start": "start",
    "container stats": "stats", "container stop": "stop", "container top": "top",
    "container unpause": "unpause", "container update": "update", "container wait": "wait",
    "image build": "build", "image history": "history", "image import": "import",
    "image inspect": "inspect", "image load": "load", "image ls": "images",
    "image list": "images", "image pull": "pull", "image push": "push", "image rm": "rmi",
    "image remove": "rmi", "image save": "save", "image tag": "tag",
    "builder build": "build", "buildx build": "build", "buildx b": "build",
    "network remove": "network rm", "network ls": "network ls", "network list": "network ls",
    "volume remove": "volume rm", "volume list": "volume ls",
    "system events": "events", "system info": "info",
}  # fmt: skip
MANAGEMENT = frozenset({
    "builder", "buildx", "checkpoint", "config", "container", "context", "image", "manifest",
    "network", "node", "plugin", "secret", "service", "stack", "swarm", "system", "trust",
    "volume", "scout", "sbom", "init", "debug",
})  # fmt: skip
# Commands that never change anything (no Engine event that needs a who).
READ_ONLY = frozenset({
    "ps", "images", "inspect", "logs", "version", "info", "events", "stats", "port", "diff",
    "history", "search", "login", "logout", "wait", "network ls", "network inspect",
    "volume ls", "volume inspect", "system df", "context", "help", "image inspect",
    "manifest", "trust", "scout", "compose ps", "compose logs", "compose config",
    "compose ls", "compose images", "compose version", "compose top", "compose events",
    "compose port", "buildx ls", "buildx du", "buildx inspect", "builder ls", "builder du",
})  # fmt: skip

# docker compose (a CLI plugin): its own global flags, then a subcommand.
COMPOSE_GLOBAL = make_spec(
    "ansi env-file f=file parallel profile progress project-directory p=project-name",
    "all-resources compatibility dry-run verbose",
    interspersed=False,
)
COMPOSE_SUB = make_spec(
    "scale t=timeout exit-code-from attach no-attach pull wait-timeout rmi e=env "
    "entrypoint l=label name p=publish u=user v=volume w=workdir index signal s=signal "
    "f=file build-arg builder ssh m=memory policy",
    "d=detach build no-build no-deps force-recreate no-recreate remove-orphans "
    "abort-on-container-exit abort-on-container-failure always-recreate-deps no-color "
    "no-log-prefix no-start quiet-pull renew-anon-volumes V=wait y=yes watch menu "
    "with-dependencies rm service-ports use-aliases i=interactive T=no-TTY privileged "
    "q=quiet no-cache push f=force s=stop v=volumes a=all include-deps ignore-buildable "
    "ignore-pull-failures",
)

# The standalone docker-compose: compose's global flags and the connection flags
# v1 shares with the docker CLI (v1's -c is --context, as in the docker CLI).
COMPOSE_STANDALONE = make_spec(
    "ansi env-file f=file parallel profile progress project-directory p=project-name "
    "H=host c=context config l=log-level tlscacert tlscert tlskey",
    "all-resources compatibility dry-run verbose no-ansi skip-hostname-check tls tlsverify "
    "v=version",
    interspersed=False,
)


def as_bool(value: str) -> bool:
    return value.lower() in ("1", "t", "true", "yes", "y", "")
