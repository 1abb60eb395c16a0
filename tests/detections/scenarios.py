"""The detections table: each scenario with the alerts it must raise and nothing else.

Scenario names start with the issue item they reproduce (`i18.1` is issue 18
item 1). Subjects: the container name, the daemon file's path, the image
reference of an image event.
"""

from __future__ import annotations

from pathlib import Path

from tests.detections.harness import (
    Expect,
    Scenario,
    audit_cli,
    audit_file,
    audit_noise,
    container_id,
    engine_event,
    image_id,
)

SCENARIO_A = Path(__file__).resolve().parents[1] / "data" / "scenario-a"  # dockerd + auditd
T = 1_795_000_000.0  # 2026-11-18
OLD = 1_430_000_000.0  # 2015
ALICE, BOB = 1001, 1002
TRUSTED_NGINX = {"untrusted-image": {"trusted": ["docker.io/library/nginx:alpine"]}}
SAFE = ["--read-only", "--memory", "64m", "--pids-limit", "64", "--user", "1000"]


def _create_destroy(
    at: float, name: str, n: int, image: str = "busybox"
) -> list[dict[str, object]]:
    cid = container_id(n)
    return [
        engine_event(at, "container", "create", cid, name=name, image=image),
        engine_event(at + 0.5, "container", "destroy", cid, name=name, image=image),
    ]


def _run(at: float, name: str, n: int, image: str, **labels: str) -> list[dict[str, object]]:
    cid = container_id(n)
    return [
        engine_event(at, "container", "create", cid, name=name, image=image, **labels),
        engine_event(at + 0.05, "container", "start", cid, name=name, image=image, **labels),
    ]


SCENARIOS: list[Scenario] = [
    # ------------------------------------------------------------- coverage (18.1)
    Scenario(
        "i18.1 audit log of another year: no unattributed-change",
        docker=_create_destroy(T + 1, "x", 1),
        audit=audit_noise(OLD) + audit_noise(OLD + 60),
        why="Engine events outside the audit records' span cannot be attributed",
    ),
    Scenario(
        "i18.1 no audit log: no unattributed-change",
        docker=_create_destroy(T + 1, "x", 1),
    ),
    Scenario(
        "i18.1 covered and no CLI call: unattributed-change",
        docker=_create_destroy(T + 1, "x", 1),
        audit=audit_noise(T) + audit_noise(T + 5),
        expect=[
            Expect("unattributed-change", "x", "medium", None),
            Expect("unattributed-change", "x", "medium", None),
        ],
    ),
    Scenario(
        "i18.1 covered and attributed: silent",
        docker=_create_destroy(T + 1, "x", 1),
        audit=[
            *audit_noise(T),
            *audit_cli(T + 0.9, ALICE, ["docker", "create", "--name", "x", "busybox"]),
            *audit_cli(T + 1.4, ALICE, ["docker", "rm", "x"]),
            *audit_noise(T + 5),
        ],
    ),
    # ------------------------------------------------------------- reads (18.2)
    Scenario(
        "i18.2 ls -l of daemon files is not a change; the touch after it is",
        audit=[
            *audit_file(T, ALICE, "lgetxattr", "/usr/sbin/dockerd", exe="/usr/bin/ls"),
            *audit_file(T, ALICE, "getxattr", "/usr/sbin/dockerd", exe="/usr/bin/ls"),
            *audit_file(T + 0.1, ALICE, "llistxattr", "/etc/docker/daemon.json", exe="/usr/bin/ls"),
            *audit_file(T + 0.1, ALICE, "newfstatat", "/etc/docker/daemon.json", exe="/usr/bin/ls"),
            *audit_file(
                T + 0.2, ALICE, "openat-read", "/etc/docker/daemon.json", exe="/usr/bin/cat"
            ),
            *audit_file(T + 1, ALICE, "utimensat", "/etc/docker/daemon.json"),
        ],
        expect=[Expect("daemon-config-change", "/etc/docker/daemon.json", "high", "alice")],
    ),
    # ------------------------------------------------------------- pulls (18.3)
    Scenario(
        "i18.3 a pull keeps its tag",
        docker=[engine_event(T, "image", "pull", "nginx:alpine", name="nginx")],
        rules=TRUSTED_NGINX,
    ),
    Scenario(
        "i18.3 a pull keeps its digest",
        docker=[engine_event(T, "image", "pull", "nginx@sha256:" + "ab" * 32, name="nginx")],
        rules={"untrusted-image": {"trusted": ["docker.io/library/*"], "require_digest": True}},
    ),
    Scenario(
        "i18.3 an untrusted pull names its reference",
        docker=[engine_event(T, "image", "pull", "evil/miner:1", name="evil/miner")],
        expect=[Expect("untrusted-image", "evil/miner:1", "high", None)],
    ),
    # ------------------------------------------------------------- push and build (18.4)
    Scenario(
        "i18.4 push of our own image is not judged",
        docker=[
            engine_event(
                T, "image", "push", "registry.internal/app:1", name="registry.internal/app"
            )
        ],
    ),
    Scenario(
        "i18.4 a classic build's steps are not untrusted runs",
        docker=[
            engine_event(T, "image", "tag", image_id(1), name="docker.io/library/alpine:3.20"),
            *_create_destroy(T + 1, "eager_build1", 2, image=image_id(1)),
            *_create_destroy(T + 2, "eager_build2", 3, image=image_id(9)),
            engine_event(T + 3, "image", "tag", image_id(10), name="docker.io/library/app:ci"),
        ],
        audit=[
            *audit_noise(T - 1),
            *audit_cli(T + 0.5, BOB, ["docker", "build", "-t", "app:ci", "."], uid=BOB),
            *audit_noise(T + 10),
        ],
    ),
    Scenario(
        "i18.4 a bare id is judged by the names the trail knows",
        docker=[
            engine_event(T, "image", "tag", image_id(4), name="evil/miner:1"),
            *_run(T + 1, "m", 5, image_id(4)),
        ],
        expect=[
            Expect("untrusted-image", "evil/miner:1", "high", None),
            Expect("untrusted-image", "m", "high", None),
        ],
    ),
    # ------------------------------------------------------------- sockets (18.6)
    Scenario(
        "i18.6 a socket mounted where clients look for docker.sock",
        docker=_run(T + 1, "d", 6, "busybox"),
        audit=[
            *audit_noise(T),
            *audit_cli(
                T + 0.5,
                BOB,
                [
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    "d",
                    "-v",
                    "/tmp/d.sock:/var/run/docker.sock",
                    *SAFE,
                    "busybox",
                ],
                uid=BOB,
            ),
            *audit_noise(T + 5),
        ],
        expect=[Expect("docker-socket-mount", "d", "critical", "bob")],
    ),
    Scenario(
        "i18.6 the directories that hold the socket",
        docker=[*_run(T + 1, "r1", 7, "busybox"), *_run(T + 2, "r2", 8, "busybox")],
        audit=[
            *audit_noise(T),
            *audit_cli(
                T + 0.5,
                BOB,
                [
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    "r1",
                    "-v",
                    "/var/run:/host-run",
                    *SAFE,
                    "busybox",
                ],
                uid=BOB,
            ),
            *audit_cli(
                T + 1.5,
                BOB,
                ["docker", "run", "-d", "--name", "r2", "-v", "/run:/x", *SAFE, "busybox"],
                uid=BOB,
            ),
            *audit_noise(T + 5),
        ],
        expect=[
            Expect("docker-socket-mount", "r1", "critical", "bob"),
            Expect("docker-socket-mount", "r2", "critical", "bob"),
        ],
    ),
    # ------------------------------------------------------------- housekeeping (19.1)
    Scenario(
        "i19.1 a daemon.json write dressed as runc/docker-untar is kept",
        audit=audit_file(
            T,
            BOB,
            "openat-write",
            "/etc/docker/daemon.json",
            uid=BOB,
            exe="/tmp/runc",
            comm="runc",
            argv=["docker-untar", "/", "/etc/docker"],
        ),
        expect=[Expect("daemon-config-change", "/etc/docker/daemon.json", "high", "bob")],
    ),
    Scenario(
        "i19.1 a daemon.json write by dockerd itself is never housekeeping",
        audit=audit_file(
            T, None, "openat-write", "/etc/docker/daemon.json", exe="/usr/sbin/dockerd"
        ),
        expect=[Expect("daemon-config-change", "/etc/docker/daemon.json", "high", None)],
    ),
    Scenario(
        "i19.1 the daemon's work in its data root stays housekeeping",
        audit=[
            *audit_file(
                T,
                None,
                "openat-write",
                "/var/lib/docker/network/files/local-kv.db",
                exe="/usr/sbin/dockerd",
            ),
            *audit_file(
                T + 1,
                None,
                "renameat",
                "/var/lib/docker/image/overlay2/repositories.json",
                exe="/usr/sbin/dockerd",
            ),
        ],
    ),
    # ------------------------------------------------------------- claims (19.2)
    Scenario(
        "i19.2 a label claiming alice does not attribute a raw API create",
        docker=[
            engine_event(
                T + 1,
                "container",
                "create",
                container_id(11),
                name="claimed",
                image="busybox",
                **{"audit.who": "alice"},
            )
        ],
        audit=audit_noise(T) + audit_noise(T + 5),
        expect=[Expect("unattributed-change", "claimed", "medium", None)],
    ),
    Scenario(
        "i19.2 a label claiming alice on bob's run is a mismatch",
        docker=_run(T + 1, "claimed", 12, "busybox", **{"audit.who": "alice"}),
        audit=[
            *audit_noise(T),
            *audit_cli(
                T + 0.5,
                BOB,
                [
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    "claimed",
                    "-l",
                    "audit.who=alice",
                    *SAFE,
                    "busybox",
                ],
                uid=BOB,
            ),
            *audit_noise(T + 5),
        ],
        expect=[Expect("attribution-mismatch", "claimed", "medium", "bob")],
    ),
    Scenario(
        "i19.2 a label claiming alice on a run by no login (cron) is a mismatch",
        docker=_run(T + 1, "nightly", 13, "busybox", **{"audit.who": "alice"}),
        audit=[
            *audit_noise(T),
            *audit_cli(
                T + 0.5,
                None,
                [
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    "nightly",
                    "-l",
                    "audit.who=alice",
                    *SAFE,
                    "busybox",
                ],
            ),
            *audit_noise(T + 5),
        ],
        expect=[Expect("attribution-mismatch", "nightly", "medium", None)],
    ),
    # ------------------------------------------------------------- recall controls
    Scenario(
        "recall: privileged run, /etc mounted, SYS_ADMIN, a root shell exec",
        docker=[
            *_run(T + 1, "dbg", 14, "busybox"),
            *_run(T + 2, "etc", 15, "busybox"),
            *_run(T + 3, "adm", 16, "busybox"),
            engine_event(
                T + 4,
                "container",
                "exec_create",
                container_id(14),
                name="dbg",
                image="busybox",
                execID="e1",
            ),
            engine_event(
                T + 4.01,
                "container",
                "exec_start",
                container_id(14),
                name="dbg",
                image="busybox",
                execID="e1",
            ),
        ],
        audit=[
            *audit_noise(T),
            *audit_cli(
                T + 0.5,
                BOB,
                ["docker", "run", "-d", "--name", "dbg", "--privileged", *SAFE, "busybox"],
                uid=BOB,
            ),
            *audit_cli(
                T + 1.5,
                BOB,
                ["docker", "run", "-d", "--name", "etc", "-v", "/etc:/h", *SAFE, "busybox"],
                uid=BOB,
            ),
            *audit_cli(
                T + 2.5,
                BOB,
                [
                    "docker",
                    "run",
                    "-d",
                    "--name",
                    "adm",
                    "--cap-add",
                    "SYS_ADMIN",
                    *SAFE,
                    "busybox",
                ],
                uid=BOB,
            ),
            *audit_cli(T + 3.9, ALICE, ["docker", "exec", "-u", "0", "dbg", "sh"]),
            *audit_noise(T + 9),
        ],
        expect=[
            Expect("privileged-container", "dbg", "critical", "bob"),
            Expect("sensitive-mount", "etc", "high", "bob"),
            Expect("dangerous-capability", "adm", "high", "bob"),
            Expect("exec-in-container", "dbg", "high", "alice"),
        ],
    ),
    Scenario(
        "i19.1 dockerd extracting docker:dind's layer writes /usr/bin/docker there: housekeeping",
        audit=audit_file(
            T,
            None,
            "openat-write",
            "/usr/bin/docker",
            exe="/usr/sbin/dockerd",
            comm="exe",
            argv=["docker-untar", "/", "/var/lib/docker/overlay2/" + "ab" * 32 + "/diff"],
            created=True,
        ),
    ),
    Scenario(
        "i19.1 the same helper into a container's root is judged by its paths",
        audit=audit_file(
            T,
            None,
            "openat-write",
            "/etc/docker/daemon.json",
            exe="/usr/sbin/dockerd",
            comm="exe",
            argv=["docker-untar", "/", "/var/lib/docker/overlay2/" + "ab" * 32 + "/merged"],
        ),
        expect=[Expect("daemon-config-change", "/etc/docker/daemon.json", "high", None)],
    ),
    Scenario(
        "i19.1 dockerd unpacking a build context or copying into a container: housekeeping",
        audit=[
            *audit_file(
                T,
                None,
                "openat-write",
                "/Dockerfile",
                exe="/usr/sbin/dockerd",
                comm="exe",
                created=True,
                argv=["docker-untar", "/", "/var/lib/docker/tmp/docker-builder1234"],
            ),
            *audit_file(
                T + 1,
                None,
                "renameat",
                "/.pivot_root1972916086",
                exe="/usr/sbin/dockerd",
                comm="exe",
                argv=["docker-untar", "/app", "/var/lib/docker/overlay2/" + "cd" * 32 + "/merged"],
            ),
            *audit_file(
                T + 2,
                None,
                "openat-write",
                "/app/config.yaml",
                exe="/usr/sbin/dockerd",
                comm="exe",
                created=True,
                argv=["docker-untar", "/app", "/var/lib/docker/overlay2/" + "cd" * 32 + "/merged"],
            ),
        ],
    ),
    # ------------------------------------------------------------- a real capture
    Scenario(
        "captured scenario-a: the risky steps and nothing else above low",
        captured=SCENARIO_A,
        rules={"untrusted-image": {"trusted": ["registry.internal/*"]}},
        expect=[
            Expect("privileged-container", "debug-priv", "critical", "alice"),
            Expect("docker-socket-mount", "sock-mounter", "critical", "bob"),
            Expect("host-namespace", "hostnet", "high", "bob"),
            Expect("dangerous-capability", "hostnet", "high", "bob"),
            Expect("untrusted-image", "randomuser/cryptominer:latest", "high", "bob"),
            Expect("untrusted-image", "miner", "high", "bob"),
            Expect("exec-in-container", "web-1", "high", "alice"),
            Expect("container-churn", "churn-8", "medium", "bob"),
            Expect("daemon-config-change", "/etc/docker/daemon.json", "high", "alice"),
        ],
    ),
]
