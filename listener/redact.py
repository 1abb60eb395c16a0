"""Secrets out of events, before the trail.

What is redacted (argv of docker CLI calls, the command lines in `who.command`,
configuration derived from argv, Engine event labels and names):

* values of `NAME=VALUE` whose NAME looks secret (`redaction.secret_names`,
  case-insensitive parts: PASSWORD, SECRET, TOKEN, KEY, CREDENTIAL …): `-e`,
  `--env`, `--env=`, `-eNAME=`, `--build-arg`, `env NAME=… cmd`, `sh -c "NAME=… cmd"`;
* the password of `docker login -p X` / `--password X` / `--password=X`
  (`--password-stdin` carries none), and `--token X` (`docker swarm join`);
* the password in URL userinfo (`https://user:pass@registry/…`,
  `-H tcp://user:pass@host`); the user name is kept (it says who);
* Engine labels whose name looks secret;
* what programs people run in containers pass passwords with, wherever such
  a command line appears (a docker CLI call's argv, the Engine's
  `exec_start: CMD` detail, an exec's or a container's inspected command, a
  proxied request body, a command run inside a container): `mysql -pSECRET`,
  `curl -u user:pw`, `redis-cli -a PW`, `sshpass -p PW`, `Authorization:`
  headers, also inside `sh -c` scripts.

A value is replaced by `redacted:hmac:` and the first 12 hex digits of
HMAC-SHA256(key, value). The key is 32 random bytes in a file next to the trail
(`redaction.key_file`, default `TRAIL.redact-key`), created 0600 with O_EXCL,
so an investigator who holds it can check whether a known value was used
(`Redactor.fingerprint`), and a reader of the trail without it cannot test
guesses of short values: the fingerprint is keyed, not a plain hash. The key
is separate from the signing key so that an auditor may hold one and not the
other, and losing it costs only the matching of old fingerprints.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from config.errors import ConfigError
from config.models import SECRET_NAME_PARTS, DocktrailConfig
from listener.model.event import Event

__all__ = ["MARKER", "Redactor", "active", "configure", "load_key"]

MARKER = "redacted:hmac:"
_FINGERPRINT_HEX = 12
_CACHE_MAX = 4096  # entries of each cache (names, texts); cleared when full
_CACHED_TEXT = 2048  # longer texts are rare: not cached
_KEY_BYTES = 32

_NAME_VALUE = re.compile(
    r"(?<![\w.-])([A-Za-z_][A-Za-z0-9_.-]*)=(\"[^\"]*\"?|'[^']*'?|[^\s;&|`'\"]*)"
)
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@\s:]*):([^/@\s]*)@")
# Flags whose value is a secret wherever they appear (`docker swarm join --token`).
_SECRET_FLAGS = ("--password", "--token")

# Programs whose own flags carry passwords, wherever they stand in an argv.
_MYSQL = frozenset({"mysql", "mysqldump", "mysqladmin", "mariadb", "mariadb-dump", "mysqlsh"})
_PASSWORD_NEXT = {"redis-cli": ("-a", "--pass"), "sshpass": ("-p",)}
_USER_PASSWORD = frozenset({"curl", "wget", "http", "https", "lftp", "ftp", "svn"})
_USER_PASSWORD_FLAGS = ("-u", "--user", "--proxy-user", "-U", "--http-user")
_PROGRAMS = _MYSQL | frozenset(_PASSWORD_NEXT) | _USER_PASSWORD
_SCRIPT_FLAGS = ("-c", "-lc", "-ec")
_SCRIPT_MYSQL = re.compile(r"(\b(?:mysql|mysqldump|mysqladmin|mariadb)\b[^;|&\n]*?\s-p)([^\s;|&]+)")
_SCRIPT_USER = re.compile(r"((?:^|\s)(?:-u|--user|--proxy-user)\s+['\"]?[^:\s'\"]+:)([^\s'\"]+)")
_SCRIPT_NEXT = re.compile(r"(\b(?:redis-cli\b[^;|&\n]*?\s-a|sshpass\s+-p)\s+)([^\s;|&]+)")
_AUTH_HEADER = re.compile(r"((?i:authorization):\s*(?:\w+\s+)?)([^\s'\"]+)")
_SCRIPT_PATTERNS = (_SCRIPT_MYSQL, _SCRIPT_USER, _SCRIPT_NEXT, _AUTH_HEADER)
_SCRIPT_HINTS = ("-p", "-u", "--user", "--proxy-user", "-a", "uthorization")


class Redactor:
    """Replaces secret values by keyed fingerprints (see the module docstring)."""

    def __init__(self, key: bytes, secret_names: Iterable[str] = SECRET_NAME_PARTS) -> None:
        self._key = key
        self._parts = tuple(part.upper() for part in secret_names if part)
        self._names: dict[str, bool] = {}  # names repeat (labels, variables): decided once
        self._texts: dict[str, str] = {}  # so do command lines: redacted once

    @classmethod
    def from_config(cls, config: DocktrailConfig) -> Redactor:
        return cls(load_key(config.redaction_key_path()), config.redaction.secret_names)

    # -- values ---------------------------------------------------------------

    def fingerprint(self, value: str) -> str:
        digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return MARKER + digest.hexdigest()[:_FINGERPRINT_HEX]

    def secret_name(self, name: str) -> bool:
        known = self._names.get(name)
        if known is None:
            upper = name.upper()
            known = any(part in upper for part in self._parts)
            if len(self._names) >= _CACHE_MAX:
                self._names.clear()
            self._names[name] = known
        return known

    def _value(self, value: str) -> str:
        if not value or value.startswith(MARKER):
            return value  # nothing to hide, or hidden already
        return self.fingerprint(value)

    # -- text -------------------------------------------------------------------

    def text(self, text: str) -> str:
        """Secret `NAME=VALUE` values (up to white space), URL passwords and the
        programs' password flags (`mysql -pX`, `curl -u u:pw` …) in free text."""
        # Looked up first, texts with nothing to hide included: the same command lines
        # come with every call of a monitoring loop, and the scan for hints cost more
        # than the look-up. The result depends on the text alone (key and names fixed);
        # only exact str are keys: a subclass may compare and hash as it likes.
        exact = type(text) is str
        known = self._texts.get(text) if exact else None
        if known is not None:
            return known
        redacted = self._redacted_text(text)
        if exact and len(text) <= _CACHED_TEXT:
            if len(self._texts) >= _CACHE_MAX:
                self._texts.clear()
            self._texts[text] = redacted
        return redacted

    def _redacted_text(self, text: str) -> str:
        scripted = any(hint in text for hint in _SCRIPT_HINTS)
        if "=" not in text and "@" not in text and not scripted:
            return text
        redacted = _NAME_VALUE.sub(self._name_value, text) if "=" in text else text
        if "@" in redacted:
            redacted = _URL_PASSWORD.sub(self._url, redacted)
        if scripted:
            redacted = self.script(redacted)
        return redacted

    def _name_value(self, match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if not self.secret_name(name):
            return match.group(0)
        quote = value[:1] if value[:1] in ("'", '"') else ""
        inner = value[len(quote) :].removesuffix(quote) if quote else value
        closing = quote if quote and len(value) > 1 and value.endswith(quote) else ""
        return f"{name}={quote}{self._value(inner)}{closing}"

    def _url(self, match: re.Match[str]) -> str:
        return f"{match.group(1)}:{self._value(match.group(2))}@"

    def script(self, text: str) -> str:
        """The programs' password flags in a shell script's text (`sh -c '…'`)."""

        def hide(match: re.Match[str]) -> str:
            return match.group(1) + self._value(match.group(2))

        for pattern in _SCRIPT_PATTERNS:
            text = pattern.sub(hide, text)
        return text

    # -- argv -------------------------------------------------------------------

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` with secret values replaced (same length: positions keep their meaning)."""
        redacted: list[str] = []
        after_login = False
        password_next = False
        for arg in argv:
            if password_next:
                redacted.append(self._value(arg))
                password_next = False
                continue
            if arg in _SECRET_FLAGS or (after_login and arg == "-p"):
                password_next = True
                redacted.append(arg)
                continue
            if arg.startswith(("--password=", "--token=")) or (
                after_login and arg.startswith("-p") and arg != "-p"
            ):
                flag, value = _split_flag(arg)
                redacted.append(flag + self._value(value))
                continue
            after_login = after_login or arg == "login"
            redacted.append(self._arg(arg))
        return self._programs(redacted)

    def _programs(self, argv: list[str]) -> list[str]:
        """The password flags of the programs an argv runs (`docker exec c mysql -pX`)."""
        program = ""
        out: list[str] = []
        secret_next = False
        for position, arg in enumerate(argv):
            if secret_next:
                out.append(self._value(arg))
                secret_next = False
                continue
            previous = argv[position - 1] if position else ""
            name = arg.rpartition("/")[2]
            if name in _PROGRAMS:
                program = name
                out.append(arg)
            elif program in _MYSQL and arg.startswith("-p") and len(arg) > 2:
                out.append("-p" + self._value(arg[2:]))
            elif arg in _PASSWORD_NEXT.get(program, ()):
                out.append(arg)
                secret_next = True
            elif program in _USER_PASSWORD and previous in _USER_PASSWORD_FLAGS and ":" in arg:
                user, _, password = arg.partition(":")
                out.append(f"{user}:{self._value(password)}")
            elif previous in _SCRIPT_FLAGS or "authorization:" in arg.lower():
                out.append(self.script(arg))
            else:
                out.append(arg)
        return out

    def _arg(self, arg: str) -> str:
        # -eNAME=VALUE: the option letter glued to its value.
        if arg.startswith("-e") and not arg.startswith("--") and "=" in arg:
            return "-e" + self._whole(arg[2:])
        flag, eq, rest = arg.partition("=")
        if eq and flag.startswith("--") and "=" in rest:  # --env=NAME=VALUE
            return f"{flag}={self._whole(rest)}"
        return self._whole(arg)

    def _whole(self, arg: str) -> str:
        """A `NAME=VALUE` argument: the whole rest is the value, spaces included."""
        name, eq, value = arg.partition("=")
        if eq and _is_name(name) and self.secret_name(name):
            return f"{name}={self._value(value)}"
        return self.text(arg)

    # -- events -----------------------------------------------------------------

    def event(self, event: Event, *, argv_done: bool = False) -> Event:
        """Redacts an event's argv, command line, labels and names in place.

        `argv_done`: `attributes.argv` was made of `argv()`'s output already.
        """
        attributes = event.attributes
        argv = None if argv_done else attributes.get("argv")
        if isinstance(argv, list) and all(isinstance(arg, str) for arg in argv):
            attributes["argv"] = self.argv(argv)
        for holder in (attributes, event.config):  # Engine labels; inspect's config.labels
            labels = holder.get("labels")
            if isinstance(labels, dict) and labels:
                redacted = {key: self._label(key, value) for key, value in labels.items()}
                if any(redacted[key] is not value for key, value in labels.items()):
                    holder["labels"] = redacted
        if event.who.command:
            event.who.command = self.text(event.who.command)
        detail = attributes.get("action_detail")  # `exec_start: CMD` from the Engine
        if isinstance(detail, str) and detail:
            attributes["action_detail"] = self.text(detail)
        for key in ("command", "entrypoint"):  # an exec's or a container's, inspected
            command = event.config.get(key)
            if isinstance(command, list) and all(isinstance(arg, str) for arg in command):
                event.config[key] = self.argv(command)
        actor = event.actor
        if actor.name and "@" in actor.name:
            actor.name = self.text(actor.name)
        if actor.image and "@" in actor.image:
            actor.image = self.text(actor.image)
        image = event.config.get("image")
        if isinstance(image, str) and "@" in image:
            event.config["image"] = self.text(image)
        return event

    def _label(self, key: str, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if self.secret_name(key):
            return self._value(value)
        return self.text(value) if "=" in value or "@" in value else value


def _split_flag(arg: str) -> tuple[str, str]:
    if arg.startswith("--"):
        flag, _, value = arg.partition("=")
        return flag + "=", value
    if arg.startswith("-p="):
        return "-p=", arg[3:]
    return "-p", arg[2:]


def _is_name(name: str) -> bool:
    return bool(name) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name) is not None


# --------------------------------------------------------------------------- key


def load_key(path: Path) -> bytes:
    """The HMAC key at `path`, created (0600, atomically) when there is none."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secrets.token_hex(_KEY_BYTES).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, path)  # never replaces a key another process created meanwhile
    except FileExistsError:
        pass
    finally:
        temp.unlink()
    return _read_key(path)


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ConfigError(f"{path}: cannot read the redaction key: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as stream:
        info = os.fstat(stream.fileno())
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path}: the redaction key is readable by others (chmod 600)")
        if info.st_uid != os.geteuid():
            raise ConfigError(f"{path}: the redaction key belongs to another user")
        text = stream.read(4 * _KEY_BYTES).strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) < 16:
        raise ConfigError(f"{path}: not a redaction key (expected {2 * _KEY_BYTES} hex digits)")
    return key


# ------------------------------------------------------------------ process default

_active: Redactor | None = None


def configure(redactor: Redactor) -> None:
    """The redactor sources use when none is given (the service and ingest set it)."""
    global _active
    _active = redactor


def active() -> Redactor:
    """The configured redactor; before any, one with a random key for this process."""
    global _active
    if _active is None:
        _active = Redactor(secrets.token_bytes(_KEY_BYTES))
    return _active
