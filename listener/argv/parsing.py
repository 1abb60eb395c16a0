"""`parse_docker_argv`: argv to a `DockerCall`, the way the docker CLI reads it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath

from listener.argv.calls import ComposeCall, DockerCall, basename, program_argv
from listener.argv.specs import (
    ALIASES,
    COMPOSE_GLOBAL,
    COMPOSE_STANDALONE,
    COMPOSE_SUB,
    DEFAULT_SPEC,
    GLOBAL,
    MANAGEMENT,
    SPECS,
    Spec,
)


def parse_docker_argv(argv: Sequence[str], cwd: str | None = None) -> DockerCall:
    """Parse a docker CLI argv (argv[0] is the program). Never raises.

    Interpreters and wrappers in front of the CLI are skipped (`program_argv`).
    The standalone `docker-compose` (v1 or the v2 plugin) is read as `docker compose`.
    """
    errors: list[str] = []
    program = program_argv(argv)
    compose_options: dict[str, tuple[str, ...]] | None = None
    if program and basename(program[0]) == "docker-compose":
        global_opts, compose_options, rest = _standalone_compose(program[1:], errors)
        command = "compose"
    else:
        global_opts, words = _parse_flags(GLOBAL, list(program[1:]), errors)
        command, rest = _command_words(words)
    compose: ComposeCall | None = None
    if command == "compose":
        compose, command, options = _parse_compose(rest, cwd, errors, compose_options)
        args: list[str] = list(compose.services)
    else:
        options, args = _parse_flags(SPECS.get(command, DEFAULT_SPEC), rest, errors)
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
    if first in MANAGEMENT:
        if len(words) > 1 and not words[1].startswith("-"):
            pair = f"{first} {words[1]}"
            return ALIASES.get(pair, pair), words[2:]
        return first, words[1:]
    return first, words[1:]


def _parse_flags(
    spec: Spec, words: list[str], errors: list[str]
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
    spec: Spec,
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
    spec: Spec,
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
        options, rest = _parse_flags(COMPOSE_GLOBAL, words, errors)
    else:
        options, rest = dict(parsed), words
    sub = rest[0] if rest else ""
    sub_options, services = _parse_flags(COMPOSE_SUB, rest[1:], [])
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
    options, rest = _parse_flags(COMPOSE_STANDALONE, list(words), errors)
    if rest and rest[0] == "compose":
        more, rest = _parse_flags(COMPOSE_STANDALONE, rest[1:], errors)
        for name, values in more.items():
            options[name] = options.get(name, ()) + values
    connection = {k: v for k, v in options.items() if k in GLOBAL.values | GLOBAL.bools}
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
