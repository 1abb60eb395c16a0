"""Property: the docker CLI argv parser, the redactor, the config loader and the
time and filter parsers never let an unexpected exception escape."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

import click
import yaml
from hypothesis import given
from hypothesis import strategies as st

from config.errors import ConfigError, InputError
from config.loader import load_config
from listener.argv import container_config, exec_options, parse_docker_argv
from listener.cli import QUERY_KEYS, parse_filters
from listener.redact import MARKER, Redactor
from listener.timeparse import parse_time_ns

WORDS = ["docker", "docker-compose", "compose", "run", "create", "exec", "login", "build",
         "pull", "push", "rm", "-e", "--env", "--env=A=B", "-p", "--password", "-pX", "-d",
         "--privileged", "--cap-add", "ALL", "-v", "/:/host", "--pid", "host", "--name", "x",
         "-u", "0", "--user=root", "-H", "tcp://u:p@h:1", "--context", "--", "-it", "-eA=B",
         "--build-arg", "TOKEN=s", "--memory", "9" * 40, "--memory=1e999g", "-m", "-1",
         "--security-opt", "seccomp=unconfined", "nginx", "alpine@sha256:" + "a" * 64,
         "--mount", "type=bind,src=/,dst=/x", "-f", "a.yml", "up", "--", "sh", "-c"]  # fmt: skip
argvs = st.lists(st.sampled_from(WORDS) | st.text(max_size=20), max_size=14)


@given(argvs, st.none() | st.text(max_size=20))
def test_argv_parser_and_redactor(argv: list[str], cwd: str | None) -> None:
    call = parse_docker_argv(argv, cwd=cwd)
    container = container_config(call)
    if container is not None:
        container.as_event_config()
    exec_options(call)
    assert isinstance(call.command_line, str)
    redactor = Redactor(b"k" * 32)
    redacted = redactor.argv(argv)
    assert len(redacted) == len(argv)
    assert redactor.argv(redacted) == redacted
    assert redactor.text(redactor.text(" ".join(argv))) == redactor.text(" ".join(argv))
    for before, after in zip(argv, redacted, strict=True):
        assert after == before or MARKER in after


@given(st.text(max_size=40))
def test_time_parser(text: str) -> None:
    try:
        value = parse_time_ns(text, now_ns=1_700_000_000_000_000_000)
    except InputError:
        return
    assert -(1 << 63) <= value < 1 << 63


@given(
    st.lists(
        st.builds(
            lambda k, v: f"{k}={v}", st.sampled_from([*QUERY_KEYS, "x"]), st.text(max_size=10)
        )
        | st.text(max_size=10),
        max_size=4,
    ),
    st.none()
    | st.text(max_size=20)
    | st.sampled_from(["10m", "99999999999999999999", "2300-01-01"]),
)
def test_filter_parser(filters: list[str], since: str | None) -> None:
    with contextlib.suppress(click.BadParameter, InputError):
        parse_filters(filters, since, None, None)


config_values: Any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
SECTIONS = ["trail", "docker", "auditd", "rules", "notifications", "input", "redaction",
            "output", "kafka", "host", "nonsense"]  # fmt: skip
SETTINGS = ["path", "batch_size", "max_line_bytes", "max_field_bytes", "max_depth", "keys",
            "secret_names", "destinations", "url", "untrusted-image", "trusted",
            "enabled"]  # fmt: skip
configs = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(st.sampled_from(SETTINGS), config_values, max_size=3) | config_values,
    max_size=4,
)


@given(configs | st.text(max_size=80).map(lambda text: {"_raw": text}))
def test_config_loader(data: dict[str, Any]) -> None:
    text = data["_raw"] if "_raw" in data else yaml.safe_dump(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docktrail.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        with contextlib.suppress(ConfigError):
            load_config(path, environ={})
