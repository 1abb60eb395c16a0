"""The docker CLI's argv, parsed the way the docker CLI parses it.

auditd records the argv of every docker CLI call (the EXECVE record). This
module turns it into what correlation and the rules need: the subcommand, its
targets (container names or ids, image references), `--name`, and for
`run`/`create` the security-relevant settings as a `ContainerConfig` with
`origin="argv"`.

Parsing follows spf13/pflag, which the docker CLI uses:

* `--flag=value` and `--flag value`; a flag that takes a value takes the next
  word whatever it looks like (`-e -x` sets the variable `-x`);
* short flags combine (`-itd`); the first one that takes a value takes the rest
  of the word (`-p8080:80`, `-itv/a:/b`) or the next word; `-d=false` works;
* boolean flags accept `--rm=false`;
* `--` ends the flags, and a lone `-` is a word (`docker import - ref`);
* `docker` itself, `run`, `create` and `exec` stop at the first word that is
  not a flag (everything after the image is the container's command); other
  commands accept flags after their arguments (`docker rm web-1 -f`).

So the parser must know which flags take a value: the tables below list them
per command (docker CLI 20.10 to 28). A flag we do not know makes the docker
CLI fail before it talks to the Engine; it is recorded in `errors` and parsed
as a boolean.
"""

from __future__ import annotations

import contextlib
import csv
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from listener.model.containerconfig import ContainerConfig, Mount
from listener.model.imageref import normalize_image_ref

__all__ = [
    "ComposeCall",
    "DockerCall",
    "ExecOptions",
    "container_config",
    "exec_options",
    "normalize_image_ref",
    "parse_docker_argv",
    "parse_memory",
    "program_argv",
]


@dataclass(frozen=True, slots=True)
class _Spec:
    """Flags of one command: long name -> takes a value; shorthand -> long name."""

    values: frozenset[str]
    bools: frozenset[str]
    short: Mapping[str, str]
    interspersed: bool = True


def _spec(values: str = "", bools: str = "", *, interspersed: bool = True) -> _Spec:
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
    return _Spec(value_names, bool_names | {"help"}, short, interspersed)


# docker (root): global options come before the command.
_GLOBAL = _spec(
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
_CREATE = _spec(_CREATE_VALUES, _CREATE_BOOLS, interspersed=False)
_RUN = _spec(_CREATE_VALUES + " detach-keys", _CREATE_BOOLS + " d=detach rm sig-proxy",
             interspersed=False)  # fmt: skip
_EXEC = _spec("detach-keys e=env env-file u=user w=workdir",
              "d=detach i=interactive privileged t=tty", interspersed=False)  # fmt: skip
_UPDATE = _spec(
    "blkio-weight cpu-period cpu-quota cpu-rt-period cpu-rt-runtime c=cpu-shares cpus "
    "cpuset-cpus cpuset-mems kernel-memory m=memory memory-reservation memory-swap "
    "pids-limit restart"
)
_BUILD = _spec(
    "add-host allow build-arg build-context builder cache-from cache-to cgroup-parent "
    "cpu-period cpu-quota c=cpu-shares cpuset-cpus cpuset-mems f=file iidfile isolation "
    "label m=memory memory-swap metadata-file network o=output platform progress secret "
    "security-opt shm-size ssh t=tag target ulimit annotation attest call provenance sbom",
    "check compress disable-content-trust force-rm load no-cache no-cache-filter pull push "
    "q=quiet rm squash stream debug",
)
_PRUNE = _spec("filter", "a=all f=force volumes")
_SPECS: dict[str, _Spec] = {
    "run": _RUN,
    "create": _CREATE,
    "exec": _EXEC,
    "update": _UPDATE,
    "build": _BUILD,
    "start": _spec("checkpoint checkpoint-dir detach-keys", "a=attach i=interactive"),
    "stop": _spec("s=signal t=time timeout"),
    "restart": _spec("s=signal t=time timeout"),
    "kill": _spec("s=signal"),
    "rm": _spec("", "f=force l=link v=volumes"),
    "pause": _spec(),
    "unpause": _spec(),
    "rename": _spec(),
    "wait": _spec("condition"),
    "attach": _spec("detach-keys", "no-stdin sig-proxy"),
    "commit": _spec("a=author c=change m=message", "p=pause"),
    "cp": _spec("", "a=archive L=follow-link q=quiet"),
    "export": _spec("o=output"),
    "top": _spec(interspersed=False),
    "logs": _spec("since n=tail until", "details f=follow t=timestamps"),
    "diff": _spec(),
    "port": _spec(),
    "stats": _spec("format", "a=all no-stream no-trunc"),
    "inspect": _spec("f=format type", "s=size"),
    "ps": _spec("f=filter format n=last", "a=all l=latest no-trunc q=quiet s=size"),
    "images": _spec("f=filter format tree", "a=all digests no-trunc q=quiet"),
    "pull": _spec("platform", "a=all-tags disable-content-trust q=quiet"),
    "push": _spec("platform", "a=all-tags disable-content-trust q=quiet"),
    "tag": _spec(),
    "rmi": _spec("platform", "f=force no-prune"),
    "import": _spec("c=change m=message platform"),
    "load": _spec("i=input platform", "q=quiet"),
    "save": _spec("o=output platform"),
    "history": _spec("format platform", "H=human no-trunc q=quiet"),
    "events": _spec("f=filter format since until"),
    "version": _spec("f=format"),
    "info": _spec("f=format"),
    "login": _spec("p=password u=username", "password-stdin"),
    "logout": _spec(),
    "search": _spec("f=filter format limit", "no-trunc"),
    "container prune": _PRUNE,
    "image prune": _PRUNE,
    "system prune": _PRUNE,
    "builder prune": _spec(
        "filter keep-storage max-used-space min-free-space reserved-space", "a=all f=force"
    ),
    "network create": _spec(
        "aux-address config-from d=driver gateway ip-range ipam-driver ipam-opt label "
        "o=opt scope subnet",
        "attachable config-only ingress internal ipv4 ipv6",
    ),
    "network connect": _spec("alias driver-opt gw-priority ip ip6 link link-local-ip"),
    "network disconnect": _spec("", "f=force"),
    "network rm": _spec("", "f=force"),
    "network prune": _PRUNE,
    "volume create": _spec(
        "availability d=driver group label limit-bytes o=opt required-bytes scope secret "
        "sharing type name"
    ),
    "volume rm": _spec("", "f=force"),
    "volume prune": _PRUNE,
    "volume update": _spec("availability"),
}
_DEFAULT_SPEC = _spec()

# Management command + subcommand (or a top-level alias) -> canonical command.
_ALIASES: dict[str, str] = {
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
_MANAGEMENT = frozenset({
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
_COMPOSE_GLOBAL = _spec(
    "ansi env-file f=file parallel profile progress project-directory p=project-name",
    "all-resources compatibility dry-run verbose",
    interspersed=False,
)
_COMPOSE_SUB = _spec(
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
_COMPOSE_STANDALONE = _spec(
    "ansi env-file f=file parallel profile progress project-directory p=project-name "
    "H=host c=context config l=log-level tlscacert tlscert tlskey",
    "all-resources compatibility dry-run verbose no-ansi skip-hostname-check tls tlsverify "
    "v=version",
    interspersed=False,
)

# --------------------------------------------------------------------------- wrappers

_CLI_NAMES = frozenset({"docker", "docker-compose"})
_INTERPRETER = re.compile(r"^(python[0-9.]*|pypy[0-9.]*|sh|bash|dash|ash|zsh|ksh)$")
# Options of the wrappers that take a value (the next word when not attached).
_WRAPPER_VALUES: dict[str, frozenset[str]] = {
    "env": frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}),
    "sudo": frozenset({"-u", "--user", "-g", "--group", "-h", "--host", "-p", "--prompt",
                       "-C", "--close-from", "-D", "--chdir", "-r", "--role", "-t", "--type",
                       "-U", "--other-user", "-T", "--command-timeout", "-R", "--chroot"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "--class", "-n", "--classdata", "-p", "--pid"}),
    "timeout": frozenset({"-k", "--kill-after", "-s", "--signal"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "nohup": frozenset(),
    "setsid": frozenset(),
    "doas": frozenset({"-u", "-C"}),
}  # fmt: skip
_INTERPRETER_VALUES = frozenset({"-W", "-X", "-Q", "-o", "-O", "--rcfile", "--init-file"})


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def program_argv(argv: Sequence[str]) -> list[str]:
    """The argv of the docker CLI or docker-compose inside `argv`, or `argv` itself.

    auditd records what the kernel ran: a script's interpreter comes first
    (`/usr/bin/python3 /usr/bin/docker-compose up -d`; with `#!/usr/bin/env
    python3`, `/usr/bin/env python3 …`), and a rule on a wrapper records the
    wrapper (`sudo -u x docker …`). Those are skipped, with their own options,
    only when a known CLI follows; anything else is left as it is.
    """
    words = list(argv)
    for _ in range(8):  # env python3 script …: a few layers at most
        if not words or _basename(words[0]) in _CLI_NAMES:
            return words
        rest = _after_wrapper(words)
        if rest is None:
            return list(argv)
        words = rest
    return list(argv)


def _after_wrapper(words: list[str]) -> list[str] | None:
    """The words after a wrapper or interpreter and its options; None if words[0] is neither."""
    name = _basename(words[0])
    if _INTERPRETER.match(name):
        values = _INTERPRETER_VALUES
    elif name in _WRAPPER_VALUES:
        values = _WRAPPER_VALUES[name]
    else:
        return None
    index = 1
    while index < len(words):
        word = words[index]
        if word == "--":
            return words[index + 1 :]
        if name == "env" and "=" in word and not word.startswith("-"):
            index += 1  # VAR=value
        elif word in ("-c", "-m"):
            return None  # a command string or a module: not a program path
        elif word.startswith("-") and word != "-":
            index += 2 if word in values else 1
        else:
            break
    rest = words[index:]
    if name == "timeout" and rest:
        rest = rest[1:]  # its DURATION
    return rest or None


@dataclass(frozen=True, slots=True)
class ComposeCall:
    """`docker compose …`: what identifies the objects it touches."""

    subcommand: str
    project: str | None  # -p, else derived from the project directory (may be overridden
    project_given: bool  # by COMPOSE_PROJECT_NAME or `name:` in the file, which we cannot see)
    services: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DockerCall:
    """One docker CLI call as the docker CLI would understand it."""

    argv: tuple[str, ...]
    command: str  # canonical: run, rm, rmi, network create, compose … ("" when none)
    options: Mapping[str, tuple[str, ...]]  # long flag name -> values ("true" for booleans)
    args: tuple[str, ...]  # words after the command
    global_options: Mapping[str, tuple[str, ...]]
    compose: ComposeCall | None = None
    errors: tuple[str, ...] = ()

    def opt(self, name: str) -> str | None:
        """The last value of a flag (pflag: the last one wins), or None."""
        values = self.options.get(name)
        return values[-1] if values else None

    def flag(self, name: str) -> bool:
        value = self.opt(name)
        return value is not None and _as_bool(value)

    @property
    def read_only(self) -> bool:
        return self.command in READ_ONLY or not self.command

    @property
    def remote(self) -> bool:
        """Talks to another Engine (-H tcp://… or ssh://): its events are not this host's."""
        for host in self.global_options.get("host", ()):
            if not host.startswith(("unix://", "fd://", "npipe://")) and not _is_local(host):
                return True
        return False

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    @property
    def image(self) -> str | None:
        """The image a run/create uses, or that pull/push/import names."""
        if self.command in ("run", "create", "pull", "push"):
            return self.args[0] if self.args else None
        if self.command == "import":
            return self.args[1] if len(self.args) > 1 else None
        return None

    @property
    def name(self) -> str | None:
        return self.opt("name")


def _is_local(host: str) -> bool:
    rest = host.split("://", 1)[-1]
    return rest.startswith(("127.", "localhost", "[::1]", "::1"))


# --------------------------------------------------------------------------- parsing


def parse_docker_argv(argv: Sequence[str], cwd: str | None = None) -> DockerCall:
    """Parse a docker CLI argv (argv[0] is the program). Never raises.

    Interpreters and wrappers in front of the CLI are skipped (`program_argv`).
    The standalone `docker-compose` (v1 or the v2 plugin) is read as `docker compose`.
    """
    errors: list[str] = []
    program = program_argv(argv)
    compose_options: dict[str, tuple[str, ...]] | None = None
    if program and _basename(program[0]) == "docker-compose":
        global_opts, compose_options, rest = _standalone_compose(program[1:], errors)
        command = "compose"
    else:
        global_opts, words = _parse_flags(_GLOBAL, list(program[1:]), errors)
        command, rest = _command_words(words)
    compose: ComposeCall | None = None
    if command == "compose":
        compose, command, options = _parse_compose(rest, cwd, errors, compose_options)
        args: list[str] = list(compose.services)
    else:
        options, args = _parse_flags(_SPECS.get(command, _DEFAULT_SPEC), rest, errors)
    return DockerCall(
        argv=tuple(argv),
        command=command,
        options=options,
        args=tuple(args),
        global_options=global_opts,
        compose=compose,
        errors=tuple(errors),
    )


def _command_words(words: list[str]) -> tuple[str, list[str]]:
    if not words:
        return "", []
    first = words[0]
    if first == "compose":
        return "compose", words[1:]
    if first in _MANAGEMENT:
        if len(words) > 1 and not words[1].startswith("-"):
            pair = f"{first} {words[1]}"
            return _ALIASES.get(pair, pair), words[2:]
        return first, words[1:]
    return first, words[1:]


def _parse_flags(
    spec: _Spec, words: list[str], errors: list[str]
) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    """pflag's parse loop: (flag values, positional words)."""
    found: dict[str, list[str]] = {}
    positional: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if word == "--":
            positional.extend(words[index:])
            break
        if not word.startswith("-") or word == "-":
            positional.append(word)
            if not spec.interspersed:
                positional.extend(words[index:])
                break
            continue
        if word.startswith("--"):
            index = _long_flag(spec, word[2:], words, index, found, errors)
        else:
            index = _short_flags(spec, word[1:], words, index, found, errors)
    return {k: tuple(v) for k, v in found.items()}, positional


def _long_flag(
    spec: _Spec,
    text: str,
    words: list[str],
    index: int,
    found: dict[str, list[str]],
    errors: list[str],
) -> int:
    name, eq, value = text.partition("=")
    if name in spec.values:
        if not eq:
            if index >= len(words):
                errors.append(f"flag needs an argument: --{name}")
                return index
            value, index = words[index], index + 1
        found.setdefault(name, []).append(value)
        return index
    if name not in spec.bools:
        errors.append(f"unknown flag: --{name}")
    found.setdefault(name, []).append(value if eq else "true")
    return index


def _short_flags(
    spec: _Spec,
    letters: str,
    words: list[str],
    index: int,
    found: dict[str, list[str]],
    errors: list[str],
) -> int:
    while letters:
        letter, letters = letters[0], letters[1:]
        name = spec.short.get(letter)
        if name is None:
            errors.append(f"unknown shorthand flag: -{letter}")
            name = letter
        if letters.startswith("=") and len(letters) > 1:
            found.setdefault(name, []).append(letters[1:])
            return index
        if name in spec.values:
            if letters:
                found.setdefault(name, []).append(letters)
            elif index < len(words):
                found.setdefault(name, []).append(words[index])
                index += 1
            else:
                errors.append(f"flag needs an argument: -{letter}")
            return index
        found.setdefault(name, []).append("true")
    return index


def _parse_compose(
    words: list[str],
    cwd: str | None,
    errors: list[str],
    parsed: Mapping[str, tuple[str, ...]] | None = None,
) -> tuple[ComposeCall, str, dict[str, tuple[str, ...]]]:
    """Compose's own flags are many and change often: unknown ones are not errors.

    `parsed`: the global flags a standalone docker-compose already read.
    """
    if parsed is None:
        options, rest = _parse_flags(_COMPOSE_GLOBAL, words, errors)
    else:
        options, rest = dict(parsed), words
    sub = rest[0] if rest else ""
    sub_options, services = _parse_flags(_COMPOSE_SUB, rest[1:], [])
    given = options.get("project-name")
    project = given[-1] if given else _compose_default_project(options, cwd)
    call = ComposeCall(
        subcommand=sub,
        project=_normalize_project(project) if project else None,
        project_given=bool(given),
        services=tuple(services) if sub not in ("run", "exec") else tuple(services[:1]),
    )
    return call, f"compose {sub}".strip(), sub_options


def _standalone_compose(
    words: Sequence[str], errors: list[str]
) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]], list[str]]:
    """`docker-compose [FLAGS] SUBCOMMAND …`: (docker's global flags, compose's, the rest).

    The v2 plugin, when the docker CLI runs it, is called as `docker-compose compose …`.
    v1 also takes the docker CLI's connection flags (-H, --context, --tls…).
    """
    options, rest = _parse_flags(_COMPOSE_STANDALONE, list(words), errors)
    if rest and rest[0] == "compose":
        more, rest = _parse_flags(_COMPOSE_STANDALONE, rest[1:], errors)
        for name, values in more.items():
            options[name] = options.get(name, ()) + values
    connection = {k: v for k, v in options.items() if k in _GLOBAL.values | _GLOBAL.bools}
    compose = {k: v for k, v in options.items() if k not in connection}
    return connection, compose, rest


def _compose_default_project(options: Mapping[str, tuple[str, ...]], cwd: str | None) -> str:
    """Compose's default: the project directory's name (--project-directory, else the
    directory of the first -f file, else the working directory)."""
    directory = (options.get("project-directory") or ("",))[-1]
    if not directory and options.get("file"):
        first = options["file"][0]
        directory = str(PurePosixPath(first).parent) if first != "-" else ""
    base = PurePosixPath(cwd or "/")
    path = base / directory if directory else base
    return path.name


def _normalize_project(name: str) -> str:
    """compose-go's NormalizeProjectName: lower case, only [a-z0-9_-], no leading - or _."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def _as_bool(value: str) -> bool:
    return value.lower() in ("1", "t", "true", "yes", "y", "")


# --------------------------------------------------------------------------- images


# --------------------------------------------------------------------------- config


_MEMORY = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_memory(text: str) -> int | None:
    """docker's RAMInBytes: `64m` -> 67108864 (binary units, `b`/`ib` suffix allowed)."""
    match = _MEMORY.match(text.strip())
    if match is None:
        return None
    number, unit = match.groups()
    return int(Decimal(number) * _UNITS[(unit or "").lower()])


def container_config(call: DockerCall) -> ContainerConfig | None:
    """The ContainerConfig a run/create asks for (origin argv); None for other commands.

    Only the settings the argv states are set (`model_fields_set`), so that a
    merge with inspect data knows what argv said and what it left to defaults.
    """
    if call.command not in ("run", "create"):
        return None
    fields: dict[str, Any] = {"origin": "argv", "image": call.image}
    for handler in _CONFIG_HANDLERS:
        handler(call, fields)
    return ContainerConfig(**fields)


def _set_flags(call: DockerCall, fields: dict[str, Any]) -> None:
    for flag, key in (("privileged", "privileged"), ("read-only", "read_only_rootfs")):
        if flag in call.options:
            fields[key] = call.flag(flag)


def _set_lists(call: DockerCall, fields: dict[str, Any]) -> None:
    for flag, key in (("cap-add", "cap_add"), ("cap-drop", "cap_drop")):
        if flag in call.options:
            fields[key] = [_cap_name(v) for v in _comma_list(call.options[flag])]
    if "device" in call.options:
        fields["devices"] = list(call.options["device"])
    if "security-opt" in call.options:
        _security(call.options["security-opt"], fields)


def _set_modes(call: DockerCall, fields: dict[str, Any]) -> None:
    modes = {"pid": "pid_mode", "ipc": "ipc_mode", "uts": "uts_mode", "userns": "userns_mode",
             "cgroupns": "cgroupns_mode"}  # fmt: skip
    for flag, key in modes.items():
        value = call.opt(flag)
        if value is not None:
            fields[key] = value
    networks = call.options.get("network", ()) + call.options.get("net", ())
    if networks:
        fields["network_mode"] = networks[0]
    if "user" in call.options:
        fields["user"] = call.opt("user")
    if "restart" in call.options:
        fields["restart_policy"] = call.opt("restart")


def _set_limits(call: DockerCall, fields: dict[str, Any]) -> None:
    memory = call.opt("memory")
    if memory is not None:
        size = parse_memory(memory)
        fields["memory_bytes"] = size or None  # 0: unlimited
    pids = call.opt("pids-limit")
    if pids is not None and _is_int(pids):
        fields["pids_limit"] = int(pids) if int(pids) > 0 else None
    cpus = call.opt("cpus")
    if cpus is not None:
        with contextlib.suppress(InvalidOperation):
            fields["nano_cpus"] = int(Decimal(cpus) * 1_000_000_000) or None
    shares = call.opt("cpu-shares")
    if shares is not None and _is_int(shares):
        fields["cpu_shares"] = int(shares)


def _set_mounts(call: DockerCall, fields: dict[str, Any]) -> None:
    mounts = [_volume_mount(v) for v in call.options.get("volume", ())]
    mounts += [m for m in map(_mount_flag, call.options.get("mount", ())) if m is not None]
    mounts += [_tmpfs_mount(v) for v in call.options.get("tmpfs", ())]
    if mounts:
        fields["mounts"] = mounts


def _set_labels(call: DockerCall, fields: dict[str, Any]) -> None:
    if "label" not in call.options:
        return
    labels: dict[str, str] = {}
    for item in call.options["label"]:
        key, _, value = item.partition("=")
        labels[key] = value
    fields["labels"] = labels


_CONFIG_HANDLERS = (_set_flags, _set_lists, _set_modes, _set_limits, _set_mounts, _set_labels)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _comma_list(values: Iterable[str]) -> list[str]:
    # pflag StringSlice: each value is itself comma separated (--cap-add A,B).
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _cap_name(value: str) -> str:
    upper = value.upper()
    return upper.removeprefix("CAP_")


def _security(options: Iterable[str], fields: dict[str, Any]) -> None:
    """docker CLI parseSecurityOpts: `key=value`, the old `key:value`, or no-new-privileges."""
    fields["security_opt"] = list(options)
    for option in options:
        key, value = _split_security_opt(option)
        if key == "seccomp":
            fields["seccomp"] = value
        elif key == "apparmor":
            fields["apparmor"] = value
        elif key == "label" and value == "disable":
            fields["selinux_disabled"] = True
        elif key == "no-new-privileges":
            fields["no_new_privileges"] = _as_bool(value)


def _split_security_opt(option: str) -> tuple[str, str]:
    if option == "no-new-privileges":
        return option, "true"
    key, eq, value = option.partition("=")
    if not eq and ":" in option:
        key, _, value = option.partition(":")
    return key, value


_PROPAGATION = frozenset({"shared", "rshared", "slave", "rslave", "private", "rprivate"})


def _volume_mount(spec: str) -> Mount:
    """`-v SRC:DST[:OPTS]` or `-v DST` (an anonymous volume)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return Mount(type="volume", source="", destination=parts[0])
    source, destination = parts[0], parts[1]
    mode = ":".join(parts[2:])
    options = set(mode.split(",")) if mode else set()
    bind = source.startswith(("/", ".", "~"))
    propagation = next((o for o in options if o in _PROPAGATION), "")
    return Mount(
        type="bind" if bind else "volume",
        source=source,
        destination=destination,
        read_only="ro" in options,
        mode=mode,
        propagation=propagation,
    )


def _mount_flag(spec: str) -> Mount | None:
    """`--mount type=bind,source=/a,target=/b,readonly` (CSV, values may be quoted)."""
    try:
        (items,) = list(csv.reader([spec]))
    except (csv.Error, ValueError):
        return None
    values: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        values[key.strip().lower()] = value if eq else "true"
    destination = values.get("target") or values.get("destination") or values.get("dst")
    if destination is None:
        return None
    read_only = values.get("readonly", values.get("ro"))
    return Mount(
        type=values.get("type", "volume"),
        source=values.get("source") or values.get("src") or "",
        destination=destination,
        read_only=read_only is not None and _as_bool(read_only),
        propagation=values.get("bind-propagation", ""),
    )


def _tmpfs_mount(spec: str) -> Mount:
    destination, _, options = spec.partition(":")
    return Mount(
        type="tmpfs",
        destination=destination,
        mode=options,
        read_only="ro" in options.split(","),
    )


# --------------------------------------------------------------------------- exec


class ExecOptions(BaseModel):
    """`Event.config` of an exec (exec_create/exec_start) from the CLI argv."""

    model_config = ConfigDict(extra="forbid")

    origin: str = Field("argv", description="Always argv: inspect does not describe execs.")
    kind: str = Field("exec", description="Marks this as the settings of an exec.")
    user: str | None = Field(None, description="-u/--user; None means the container's user.")
    privileged: bool = Field(False, description="--privileged.")
    interactive: bool = Field(False, description="-i.")
    tty: bool = Field(False, description="-t.")
    detach: bool = Field(False, description="-d.")
    workdir: str | None = Field(None, description="-w/--workdir.")
    command: list[str] = Field(default_factory=list, description="The command run.")


def exec_options(call: DockerCall) -> ExecOptions | None:
    if call.command != "exec":
        return None
    return ExecOptions(
        user=call.opt("user"),
        privileged=call.flag("privileged"),
        interactive=call.flag("interactive"),
        tty=call.flag("tty"),
        detach=call.flag("detach"),
        workdir=call.opt("workdir"),
        command=list(call.args[1:]),
    )
