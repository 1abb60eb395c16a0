"""Benchmark: who did it, over a scripted mix of changes by three logins.

Usage: python bench/attribution_mix.py [--baseline REF] [--rounds N]   (as root)

Starts a private dockerd (tests/dockerd.py) and a private auditd with the
project's docker CLI and docker-compose rules (tests/test_audit_live.py; the
machine-wide "live-audit" lock is held throughout), creates three logins, and
plays the same mix twice, each time under `docktrail run` (a real process,
auditd enabled, rules on, fresh trail): once with the code of git REF
(default: the commit before attribution of compose, races and raw starts was
reworked), once with this checkout. The mix, per round:

* plain CLI: runs, stop, rm -f, start, rename, volumes and networks, by
  alice and carol as root with their login uid (the sudo pattern) and bob as
  himself in the docker group; two logins' runs in the same second;
* docker-compose v1 (Debian's Python script): a two-service project up -d
  and down, by bob, in his project directory;
* races: carol's `run --name` that the Engine refuses (no command), then
  alice's that works; two unnamed `run --rm` of alice and bob at once;
* raw Engine API: carol starts and kills bob's container with curl;
* `docker import FILE REF` by carol.

Every Engine change of those objects is scored against who really made it:
right (that login), wrong (another login; for a raw-API change, any login),
none (no login). Raw-API starts and kills are also counted as flagged when
`unattributed-change` fired on them. The figures are printed per code
version, with the ratio of right answers after / before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

from listener.model.event import Event  # noqa: E402
from sinks.base import AlertFilter, EventFilter  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402
from tests.dockerd import (  # noqa: E402
    BUSYBOX_REF,
    Dockerd,
    busybox_rootfs_tar,
    unavailable_reason,
    wait_until,
)
from tests.shared_data import machine_lock  # noqa: E402
from tests.test_audit_live import (  # noqa: E402
    Person,
    PrivateAuditd,
    _auditd_unavailable,
    _docker_gid,
    as_login,
)

DEFAULT_BASELINE = "53c8a20"
LOGINS = ("dt-alice", "dt-bob", "dt-carol")
RAW = "(raw API)"  # truth of a change made through the raw Engine API by no CLI
NO_COMMAND_IMAGE = "registry.internal/base/nocmd:1"
COUNTED = {
    "container": {"create", "start", "kill", "die", "stop", "destroy", "rename", "restart",
                  "pause", "unpause"},
    "network": {"create", "destroy", "connect", "disconnect"},
    "volume": {"create", "destroy"},
    "image": {"import", "tag"},
}  # fmt: skip
COMPOSE_FILE = f"""\
version: "2.4"
services:
  web:
    image: {BUSYBOX_REF}
    command: sleep 300
  worker:
    image: {BUSYBOX_REF}
    command: sleep 300
"""


# ---------------------------------------------------------------------------- truth


@dataclass(slots=True)
class Truth:
    """Who made which object: by name (containers, networks, volumes, images), by
    container id, by compose project."""

    names: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    projects: dict[str, str] = field(default_factory=dict)
    raw: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, action) -> RAW

    def of(self, event: Event) -> str | None:
        labels = event.attributes.get("labels")
        project = labels.get("com.docker.compose.project") if isinstance(labels, dict) else None
        name = event.actor.name or ""
        container = event.attributes.get("container")
        for key in ((name, event.action), (name, "*")):
            if key in self.raw:
                return self.raw[key]
        if isinstance(project, str) and project in self.projects:
            return self.projects[project]
        if event.actor.id in self.ids:
            return self.ids[event.actor.id]
        if isinstance(container, str) and container in self.ids:
            return self.ids[container]
        for prefix, login in self.projects.items():
            if name.startswith(f"{prefix}_"):
                return login
        return self.names.get(name)


# ---------------------------------------------------------------------------- the mix


class Mix:
    """The scripted changes of one round; `truth` says who made each object."""

    def __init__(self, daemon: Dockerd, people: dict[str, Person], tag: str) -> None:
        self.daemon = daemon
        self.alice, self.bob, self.carol = (people[n] for n in LOGINS)
        self.tag = tag
        self.truth = Truth()

    def cli(self, person: Person, *argv: str, made: tuple[str, ...] = ()) -> str:
        own = person is self.bob  # bob: the docker-group pattern
        output = as_login(person, self.daemon, *argv, own_uid=own)
        for name in made:
            self.truth.names[name] = person.name
        return output

    def play(self) -> None:
        for step in (self.plain, self.same_second, self.compose, self.refused_race,
                     self.unnamed_pair, self.raw_api, self.image_import, self.cleanup):  # fmt: skip
            step()

    def plain(self) -> None:
        t, a, b, c = self.tag, self.alice, self.bob, self.carol
        self.cli(a, "run", "-d", "--name", f"a-web-{t}", "--memory", "64m", BUSYBOX_REF,
                 "sleep", "300", made=(f"a-web-{t}",))  # fmt: skip
        self.cli(b, "run", "-d", "--name", f"b-job-{t}", BUSYBOX_REF, "sleep", "300",
                 made=(f"b-job-{t}",))  # fmt: skip
        self.cli(c, "volume", "create", f"c-vol-{t}", made=(f"c-vol-{t}",))
        self.cli(c, "network", "create", f"c-net-{t}", made=(f"c-net-{t}",))
        # the same objects changed later by their owners
        self.cli(a, "stop", "-t", "1", f"a-web-{t}")
        self.cli(b, "rm", "-f", f"b-job-{t}")
        self.cli(c, "network", "rm", f"c-net-{t}")
        self.cli(c, "volume", "rm", f"c-vol-{t}")
        self.cli(a, "rename", f"a-web-{t}", f"a-web2-{t}", made=(f"a-web2-{t}",))
        self.cli(a, "start", f"a-web2-{t}")

    def same_second(self) -> None:
        t = self.tag
        threads = [
            threading.Thread(target=self.cli, args=(p, "run", "-d", "--name", f"{p.name}-{t}",
                             BUSYBOX_REF, "sleep", "300"), kwargs={"made": (f"{p.name}-{t}",)})
            for p in (self.alice, self.carol)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def compose(self) -> None:
        project = f"bproj{self.tag}"
        directory = self.bob.home / project
        directory.mkdir(exist_ok=True)
        (directory / "docker-compose.yml").write_text(COMPOSE_FILE)
        os.chown(directory, self.bob.uid, self.bob.gid)
        self.truth.projects[project] = self.bob.name
        for argv in (("up", "-d"), ("down", "-t", "1")):
            run_in(self.bob, self.daemon, directory, "docker-compose", *argv, own_uid=True)

    def refused_race(self) -> None:
        name = f"race-{self.tag}"
        refused = attempt(self.carol, self.daemon, "run", "-d", "--name", name, NO_COMMAND_IMAGE)
        assert not refused, "the Engine should refuse a run with no command"
        time.sleep(1)
        self.cli(self.alice, "run", "-d", "--name", name, NO_COMMAND_IMAGE, "sleep", "300",
                 made=(name,))  # fmt: skip

    def unnamed_pair(self) -> None:
        cidfiles = {p.name: p.home / f"cid-{self.tag}" for p in (self.alice, self.bob)}

        def run(person: Person, word: str) -> None:
            self.cli(person, "run", "--rm", "--cidfile", str(cidfiles[person.name]),
                     BUSYBOX_REF, "echo", word)  # fmt: skip

        threads = [threading.Thread(target=run, args=(self.alice, "one")),
                   threading.Thread(target=run, args=(self.bob, "two"))]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for login, path in cidfiles.items():
            self.truth.ids[path.read_text().strip()] = login
            path.unlink()

    def raw_api(self) -> None:
        name = f"raw-{self.tag}"
        self.cli(self.bob, "create", "--name", name, BUSYBOX_REF, "sleep", "300", made=(name,))
        for action in ("start", "kill"):
            raw_post(self.carol, self.daemon, f"/containers/{name}/{action}")
            self.truth.raw[(name, action)] = RAW
        self.truth.raw[(name, "die")] = RAW
        time.sleep(0.5)
        self.cli(self.bob, "rm", name)

    def image_import(self) -> None:
        rootfs = self.carol.home / "rootfs.tar"
        rootfs.write_bytes(busybox_rootfs_tar())
        reference = f"registry.internal/mix/imported:{self.tag}"
        self.cli(self.carol, "import", str(rootfs), reference, made=(reference,))
        rootfs.unlink()

    def cleanup(self) -> None:
        t = self.tag
        self.cli(self.alice, "rm", "-f", f"a-web2-{t}", f"race-{t}", f"dt-alice-{t}")
        self.cli(self.carol, "rm", "-f", f"dt-carol-{t}")
        self.cli(self.alice, "volume", "create", f"end-{t}", made=(f"end-{t}",))


def run_in(person: Person, daemon: Dockerd, cwd: Path, *argv: str, own_uid: bool) -> None:
    """A program with the person's login uid in `cwd` (as them with the docker group)."""
    env = dict(daemon.env, HOME=str(person.home))
    command = list(argv)
    if own_uid:
        command = ["setpriv", f"--reuid={person.uid}", f"--regid={person.gid}",
                   f"--groups={_docker_gid()}", *command]  # fmt: skip
    script = f'echo {person.uid} > /proc/self/loginuid && cd "$0" && exec "$@"'
    result = subprocess.run(["sh", "-c", script, str(cwd), *command], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr}")


def attempt(person: Person, daemon: Dockerd, *argv: str) -> bool:
    script = f'echo {person.uid} > /proc/self/loginuid && exec "$@"'
    result = subprocess.run(["sh", "-c", script, "_", "docker", *argv], env=daemon.env,
                            capture_output=True, timeout=60)  # fmt: skip
    return result.returncode == 0


def raw_post(person: Person, daemon: Dockerd, path: str) -> None:
    script = f'echo {person.uid} > /proc/self/loginuid && exec "$@"'
    curl = ["curl", "-sf", "--unix-socket", str(daemon.socket_path), "-X", "POST",
            f"http://localhost{path}"]  # fmt: skip
    subprocess.run(["sh", "-c", script, "_", *curl], check=True, timeout=30)


# ---------------------------------------------------------------------------- service


class Service:
    """`python -m listener run` of the code in `code` (PYTHONPATH), auditd and rules on."""

    def __init__(self, code: Path, work: Path, daemon: Dockerd, audit_log: Path) -> None:
        self.code, self.work = code, work
        self.trail = work / "trail.db"
        self.config = work / "docktrail.yaml"
        self.config.write_text(
            f"host: bench\ntrail:\n  path: {self.trail}\n  flush_interval_secs: 0.02\n"
            f"docker:\n  host: {daemon.host}\n"
            f"auditd:\n  enabled: true\n  log_file: {audit_log}\n  start_at: end\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Service:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.work),
               "PYTHONPATH": str(self.code)}  # fmt: skip
        self.log = open(self.work / "service.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "listener", "-c", str(self.config), "run"],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env, cwd=self.work,
        )  # fmt: skip
        if not wait_until(lambda: b"connected to the Docker Engine" in self._log(), 30):
            raise RuntimeError(f"docktrail run did not start:\n{self._log().decode()}")
        time.sleep(1)  # the audit tail is open at the end of the log
        return self

    def _log(self) -> bytes:
        return (self.work / "service.log").read_bytes()

    def caught_up(self, marker: str) -> bool:
        with SQLiteTrail(self.trail) as trail:
            made = [e for e in trail.query(EventFilter(source="docker", type="volume"))
                    if e.actor.name == marker]  # fmt: skip
            return bool(made) and trail.evaluated_through() >= (made[0].seq or 0)

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# ---------------------------------------------------------------------------- scoring


@dataclass(slots=True)
class Score:
    right: int = 0
    wrong: int = 0
    none: int = 0
    raw_right: int = 0  # a raw-API change left without a login
    raw_wrong: int = 0  # ... given to a login
    raw_flagged: int = 0  # raw starts/kills flagged by unattributed-change
    raw_actions: int = 0
    misses: Counter[str] = field(default_factory=Counter)

    @property
    def cli_total(self) -> int:
        return self.right + self.wrong + self.none


def score(trail_path: Path, truths: list[Truth]) -> Score:
    found = Score()
    with SQLiteTrail(trail_path) as trail:
        events = list(trail.query(EventFilter(source="docker")))
        flagged = {a.event_id for a in trail.query_alerts(AlertFilter(rule="unattributed-change"))}
    import_owner = _import_owners(events, truths)
    for event in events:
        if event.action not in COUNTED.get(event.type, ()):
            continue
        expected = next((t.of(event) for t in truths if t.of(event)), None)
        if expected is None and event.type == "image":
            expected = import_owner.get(event.actor.id)
        if expected is None:
            continue  # not an object of the mix (the bench's own setup)
        login = event.who.login if event.who.method not in ("unknown", "") else None
        if expected == RAW:
            found.raw_right += login is None
            found.raw_wrong += login is not None
            if event.action in ("start", "kill"):
                found.raw_actions += 1
                found.raw_flagged += event.id in flagged
        elif login == expected:
            found.right += 1
        else:
            found.wrong += login is not None
            found.none += login is None
            found.misses[f"{event.type} {event.action}"] += 1
    return found


def _import_owners(events: list[Event], truths: list[Truth]) -> dict[str, str]:
    """An import event names only the image id: the owner of the tag event of that id."""
    owners: dict[str, str] = {}
    for event in events:
        if event.type == "image" and event.action == "tag":
            for truth in truths:
                login = truth.names.get(event.actor.name or "")
                if login:
                    owners[event.actor.id] = login
    return owners


# ---------------------------------------------------------------------------- main


@contextlib.contextmanager
def logins(names: tuple[str, ...]) -> Iterator[dict[str, Person]]:
    created, found = [], {}
    home = Path(tempfile.mkdtemp(prefix="dt-bench-home-"))
    home.chmod(0o755)
    try:
        for name in names:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
                created.append(name)
                entry = pwd.getpwnam(name)
            user_home = home / name
            user_home.mkdir(mode=0o700)
            os.chown(user_home, entry.pw_uid, entry.pw_gid)
            found[name] = Person(name, entry.pw_uid, entry.pw_gid, user_home)
        yield found
    finally:
        for name in created:
            subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def export(ref: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True,
                             check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def play_round(
    code: Path, work: Path, daemon: Dockerd, audit: PrivateAuditd,
    people: dict[str, Person], rounds: int, label: str,
) -> Score:  # fmt: skip
    truths: list[Truth] = []
    with Service(code, work, daemon, audit.log_file) as service:
        for n in range(rounds):
            mix = Mix(daemon, people, f"{label}{n}")
            mix.play()
            truths.append(mix.truth)
            marker = f"end-{label}{n}"
            if not wait_until(lambda m=marker: service.caught_up(m), 30):  # type: ignore[misc]
                raise RuntimeError(f"the trail did not catch up with round {n}")
        time.sleep(1.5)
    daemon.docker("volume", "prune", "-f", check=False)
    return score(service.trail, truths)


def report(label: str, found: Score) -> None:
    print(f"{label}: CLI-made changes {found.cli_total}: right {found.right}, "
          f"wrong {found.wrong}, none {found.none}; raw-API changes "
          f"{found.raw_right + found.raw_wrong}: left without a login {found.raw_right}, "
          f"given to a login {found.raw_wrong}; raw starts/kills flagged "
          f"{found.raw_flagged}/{found.raw_actions}")  # fmt: skip
    if found.misses:
        print(f"  not right: {dict(sorted(found.misses.items()))}")


def bench(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dt-mix-")))
        tmp.chmod(0o755)
        daemon = stack.enter_context(Dockerd())
        daemon.import_busybox()
        daemon.docker("import", "-", NO_COMMAND_IMAGE, input=busybox_rootfs_tar())
        daemon.root.chmod(daemon.root.stat().st_mode | 0o011)
        os.chown(daemon.socket_path, 0, _docker_gid())
        audit = PrivateAuditd()
        audit.start()
        stack.callback(audit.stop)
        people = stack.enter_context(logins(LOGINS))
        baseline = export(args.baseline, Path(tempfile.mkdtemp(dir=tmp, prefix="base-")))
        runs = {}
        for label, code in (("before", baseline), ("after", REPO)):
            work = Path(tempfile.mkdtemp(dir=tmp, prefix=f"{label}-"))
            runs[label] = play_round(code, work, daemon, audit, people, args.rounds, label)
            report(f"{label} ({args.baseline if label == 'before' else 'this checkout'})",
                   runs[label])  # fmt: skip
        before, after = runs["before"], runs["after"]
        ratio = after.right / before.right if before.right else float("inf")
        print(
            f"right answers after / before: {ratio:.2f} "
            f"({after.right}/{after.cli_total} vs {before.right}/{before.cli_total})"
        )
        share = after.right / after.cli_total if after.cli_total else 0.0
        base = before.right / before.cli_total if before.cli_total else 0.0
        figure("attribution_mix.right_share", share * 100, "%", baseline=base * 100,
               ratio=ratio if before.right else None)  # fmt: skip
        figure("attribution_mix.raw_given_to_a_login", after.raw_wrong, "changes",
               baseline=before.raw_wrong, target="<=0")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref of 'before'")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the mix per version")
    args = parser.parse_args()
    if shutil.which("docker-compose") is None or shutil.which("curl") is None:
        sys.exit("the mix needs docker-compose (v1) and curl")
    with machine_lock("live-audit"):
        for reason in (unavailable_reason(), _auditd_unavailable()):
            if reason is not None:
                sys.exit(f"cannot run the mix here: {reason}")
        bench(args)


if __name__ == "__main__":
    main()
