"""A parsed call (`DockerCall`, `ComposeCall`) and the argv of the program behind
wrappers (sudo, env, timeout, interpreters).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from listener.argv.specs import READ_ONLY, as_bool

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


def basename(path: str) -> str:
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
        if not words or basename(words[0]) in _CLI_NAMES:
            return words
        rest = _after_wrapper(words)
        if rest is None:
            return list(argv)
        words = rest
    return list(argv)


def _after_wrapper(words: list[str]) -> list[str] | None:
    """The words after a wrapper or interpreter and its options; None if words[0] is neither."""
    name = basename(words[0])
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
        return value is not None and as_bool(value)

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
