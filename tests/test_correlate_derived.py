"""What the correlator derives from a call's argv is worked out once per `DockerCall`
(the converter hands out the same object for the same argv): a call seen again, or an
equal call parsed anew, is indexed exactly as a fresh derivation indexes it."""

from __future__ import annotations

import dataclasses

from listener.argv import DockerCall
from listener.correlate import CliCall, Correlator
from listener.correlate.calls import DERIVED_CAP, derive_call
from tests.test_correlate import call

COMMANDS = [
    "run -d --name web -p 80:80 nginx:1.25",
    "run --rm busybox echo hi",
    "create --name db postgres",
    "rm -f web 0123456789ab",
    "rm --force --time 30 web",
    "stop -t 5 web",
    "rmi nginx:1.25 4f2a9c0b1d3e",
    "tag busybox registry.local/busybox:1",
    "network create --name front backnet",
    "network connect front web",
    "volume rm data logs",
    "exec -it web sh",
    "cp web:/etc/hosts .",
    "compose -p shop up -d",
    "compose up -d",
    "build -t app:1 -t app:latest .",
    "import - base:1",
    "pull alpine",
]


def indexed(found: Correlator, cli: CliCall) -> list[str]:
    return sorted(key for key, calls in found._by_key.items() if cli in calls)


def expected(found: Correlator, docker_call: DockerCall, time_ns: int) -> tuple[object, ...]:
    fresh = derive_call(docker_call, found._window_ns(docker_call))  # no cache involved
    return (fresh.names, fresh.refs, fresh.objects, fresh.effects, time_ns + fresh.window_ns,
            sorted(fresh.keys), fresh.hex_target)  # fmt: skip


def test_a_call_seen_again_is_indexed_as_a_fresh_one() -> None:
    found = Correlator(window_secs=10, long_window_secs=600)
    parsed: dict[str, DockerCall] = {}
    for at, command in enumerate(COMMANDS * 3):
        cli = call(at, command)
        if command in parsed and at < 2 * len(COMMANDS):  # the object seen the first time
            cli = dataclasses.replace(cli, call=parsed[command])
        parsed.setdefault(command, cli.call)  # (the third round: equal calls, new objects)
        found.add_call(cli)
        if cli.call.read_only or cli not in found._calls:
            continue
        assert (cli.names, cli.refs, cli.objects, cli.effects, cli.expires_ns, indexed(found, cli),
                cli in found._hex_targets) == expected(found, cli.call, cli.time_ns)  # fmt: skip


def test_the_derived_calls_kept_are_bounded() -> None:
    found = Correlator()
    for n in range(DERIVED_CAP + 10):
        found.add_call(call(n / 1000, f"run --name c{n} busybox"))
    assert 0 < len(found._calls_derived) <= DERIVED_CAP
    assert all(entry.call is cli.call for cli in found._calls if
               (entry := found._calls_derived.get(id(cli.call))) is not None)  # fmt: skip
