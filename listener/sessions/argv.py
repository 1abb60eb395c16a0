"""Command lines run inside containers: secrets out, size bounded.

The shared redaction (`listener.redact`: secret `NAME=VALUE`, URL passwords,
`--password`/`--token` values) runs first; then what programs people run in
containers pass passwords with: `mysql -pSECRET`, `curl -u user:pw`,
`redis-cli -a PW`, `sshpass -p PW`, `Authorization:` headers. The same is done
inside `sh -c` scripts. A value becomes the redactor's keyed fingerprint.
"""

from __future__ import annotations

import posixpath
import re

from listener import redact

_MYSQL = frozenset({"mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump", "mysqlsh"})
_PASSWORD_NEXT = {"redis-cli": ("-a", "--pass"), "sshpass": ("-p",)}
_USER_PASSWORD_FLAGS = ("-u", "--user", "--proxy-user", "-U")
_SCRIPT_FLAGS = ("-c", "-lc", "-ec")

_SCRIPT_MYSQL = re.compile(r"(\b(?:mysql|mysqldump|mysqladmin|mariadb)\b[^;|&\n]*?\s-p)([^\s;|&]+)")
_SCRIPT_USER = re.compile(r"((?:^|\s)(?:-u|--user|--proxy-user)\s+['\"]?[^:\s'\"]+:)([^\s'\"]+)")
_SCRIPT_NEXT = re.compile(r"(\b(?:redis-cli\b[^;|&\n]*?\s-a|sshpass\s+-p)\s+)([^\s;|&]+)")
_AUTH_HEADER = re.compile(r"((?i:authorization):\s*(?:\w+\s+)?)([^\s'\"]+)")


def redacted_argv(argv: list[str], redactor: redact.Redactor) -> list[str]:
    """`argv` with secret values replaced; same length, so positions keep their meaning."""
    argv = redactor.argv(argv)
    program = posixpath.basename(argv[0]) if argv else ""
    out: list[str] = []
    secret_next = False
    for position, arg in enumerate(argv):
        if secret_next:
            out.append(redactor.fingerprint(arg) if not arg.startswith(redact.MARKER) else arg)
            secret_next = False
            continue
        previous = argv[position - 1] if position else ""
        if program in _MYSQL and arg.startswith("-p") and len(arg) > 2:
            out.append("-p" + redactor.fingerprint(arg[2:]))
        elif arg in _PASSWORD_NEXT.get(program, ()):
            out.append(arg)
            secret_next = True
        elif previous in _USER_PASSWORD_FLAGS and ":" in arg:
            user, _, password = arg.partition(":")
            out.append(f"{user}:{redactor.fingerprint(password)}")
        elif previous in _SCRIPT_FLAGS or "authorization:" in arg.lower():
            out.append(redacted_script(arg, redactor))
        else:
            out.append(arg)
    return out


def redacted_script(text: str, redactor: redact.Redactor) -> str:
    """A shell script given with `-c`: the same secrets, found in its text."""

    def hide(match: re.Match[str]) -> str:
        value = match.group(2)
        if value.startswith(redact.MARKER):
            return match.group(0)
        return match.group(1) + redactor.fingerprint(value)

    for pattern in (_SCRIPT_MYSQL, _SCRIPT_USER, _SCRIPT_NEXT, _AUTH_HEADER):
        text = pattern.sub(hide, text)
    return text


def bounded_argv(argv: list[str], max_bytes: int) -> tuple[list[str], int]:
    """At most `max_bytes` of argv (UTF-8), cut at the end; how many bytes were cut."""
    total = sum(len(arg.encode("utf-8", "surrogateescape")) for arg in argv)
    if total <= max_bytes:
        return argv, 0
    kept: list[str] = []
    room = max_bytes
    for arg in argv:
        data = arg.encode("utf-8", "surrogateescape")
        if len(data) <= room:
            kept.append(arg)
            room -= len(data)
            continue
        if room > 0:
            kept.append(data[:room].decode("utf-8", "ignore") + "…")
        break
    return kept, total - max_bytes
