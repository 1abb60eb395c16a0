"""Throughput of `SQLiteTrail.append` against a raw sqlite-utils `insert_all`.

    .venv/bin/python bench/trail_append.py [--events N] [--batch 500] [--dir DIR]

For N synthetic but realistic events (container lifecycles with labels, audit
attribution and security config; execs, health checks, network connects,
image pulls) it prints, for durability normal and full:

- events/s of `SQLiteTrail.append` in batches (dedupe, hash chain, indexes,
  one transaction per batch), file on disk;
- events/s of `sqlite_utils.Database(...)["events"].insert_all(rows,
  batch_size=...)` of the very rows the trail stored (as dicts of the same
  columns, same journal mode and synchronous level, no indexes), and the ratio;

and events/s of `verify()` over the trail. Target: >= 0.5x raw. Event
generation is not timed.

Each durability is measured `--rounds` times, the trail and the raw insert in
turn (which goes first alternates), each into a fresh file: the figures are the
medians of the rounds, and the ratio is the median of each round's ratio. An
append of 20,000 events takes about half a second, so one busy moment of a
shared machine (the previous bench's files written back, say) would otherwise
decide the ratio; in a round both sides see the same moment.
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlite_utils import Database

REPO = Path(__file__).resolve().parents[1]
for where in (REPO, REPO / "bench"):
    if str(where) not in sys.path:  # run as a script from a checkout, or imported by tests
        sys.path.insert(0, str(where))

from figures import figure  # noqa: E402

from listener.model.event import Actor, Event, Who, Why, time_ordered_id  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402

IMAGES = (
    "registry.internal/web/nginx:1.25",
    "registry.internal/api/shop:2024.11.3",
    "docker.io/library/redis:7.2",
    "docker.io/library/postgres:16",
    "registry.internal/tools/node-exporter:1.8",
)
LOGINS = ("alice", "bob", "carol", "deploy")
LIFECYCLE = (
    "create",
    "attach",
    "connect",
    "start",
    "exec_create: sh -c 'nginx -t'",
    "exec_start: sh -c 'nginx -t'",
    "exec_die",
    "health_status: healthy",
    "kill",
    "die",
    "stop",
    "destroy",
)
T0 = 1_795_346_502_000_000_000


def synthetic_events(count: int, host: str = "docker-01") -> Iterator[Event]:
    """Deterministic event stream: container lifecycles interleaved with image pulls."""
    for i in range(count):
        yield _event(i, host)


def _event(i: int, host: str) -> Event:
    k, step = divmod(i, len(LIFECYCLE) + 1)
    if step == len(LIFECYCLE):
        return _image_pull(i, k, host)
    action = LIFECYCLE[step]
    image = IMAGES[k % len(IMAGES)]
    name = f"{('web', 'api', 'cache', 'db', 'exporter')[k % 5]}-{k}"
    cid = hashlib.sha256(f"container{k}".encode()).hexdigest()
    if action == "connect":
        return _construct(
            i,
            host,
            "network",
            action,
            Actor.model_construct(
                id=hashlib.sha256(b"bridge").hexdigest(), name="bridge", image=None
            ),
            {"container": cid, "name": "bridge", "type": "bridge"},
            _who(k, "docker network connect bridge " + name),
            {},
        )
    attributes: dict[str, Any] = {
        "image": image,
        "name": name,
        "labels": {
            "com.docker.compose.project": "shop",
            "com.docker.compose.service": name.split("-")[0],
            "audit.ticket": f"OPS-{1000 + k % 97}",
        },
    }
    if action == "die":
        attributes["exitCode"] = "0" if k % 7 else "137"
    config = _config(k) if action == "create" else {}
    human = action in ("create", "start", "kill", "stop", "destroy") or action.startswith("exec_")
    who = _who(k, f"docker {action.split(':')[0]} {name}") if human else Who.model_construct()
    actor = Actor.model_construct(id=cid, name=name, image=image)
    return _construct(i, host, "container", action, actor, attributes, who, config)


def _image_pull(i: int, k: int, host: str) -> Event:
    image = IMAGES[k % len(IMAGES)]
    actor = Actor.model_construct(id=image, name=image, image=None)
    return _construct(
        i, host, "image", "pull", actor, {"name": image}, _who(k, f"docker pull {image}"), {}
    )


def _who(k: int, command: str) -> Who:
    login = LOGINS[k % len(LOGINS)]
    return Who.model_construct(
        login=login,
        auid=1000 + k % len(LOGINS),
        user="root",
        uid=0,
        pid=40_000 + k,
        command=command,
        method="auditd-cli",
    )


def _config(k: int) -> dict[str, Any]:
    return {
        "privileged": k % 50 == 0,
        "cap_add": ["NET_ADMIN"] if k % 20 == 0 else [],
        "mounts": [f"/srv/data/{k % 10}:/data:ro"],
        "network_mode": "bridge",
        "read_only": k % 3 == 0,
        "user": "" if k % 4 else "1000:1000",
        "memory": 536_870_912 if k % 5 else 0,
        "pids_limit": 256 if k % 5 else None,
        "security_opt": [],
    }


def _construct(
    i: int,
    host: str,
    type_: str,
    action: str,
    actor: Actor,
    attributes: dict[str, Any],
    who: Who,
    config: dict[str, Any],
) -> Event:
    # model_construct: sources validate once when they normalise; the benchmark
    # should not time or wait for validation it does not measure.
    time_ns = T0 + i * 1_250_000 + (i * 7919) % 1000
    return Event.model_construct(
        seq=None,
        id=time_ordered_id(time_ns, host, time_ns, type_, action, actor.id),  # as the Engine's
        time_ns=time_ns,
        source="docker",
        host=host,
        type=type_,
        action=action,
        actor=actor,
        attributes=attributes,
        who=who,
        why=Why.model_construct(reason="release 2024.11", ticket="OPS-1234", source="label")
        if type_ == "container"
        else Why.model_construct(),
        config=config,
        hash=None,
        prev_hash=None,
    )


def bench_trail(path: Path, durability: str, count: int, batch: int) -> float:
    """Seconds spent in append() for `count` events."""
    spent = 0.0
    events = synthetic_events(count)
    trail = SQLiteTrail(path, durability=durability)  # type: ignore[arg-type]
    with trail:
        while chunk := [event for _, event in zip(range(batch), events, strict=False)]:
            started = time.perf_counter()
            trail.append(chunk)
            spent += time.perf_counter() - started
    return spent


def stored_rows(path: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = [dict(row) for row in conn.execute("SELECT * FROM events ORDER BY seq")]
    conn.close()
    return rows


def bench_raw(path: Path, durability: str, rows: list[dict[str, Any]], batch: int) -> float:
    """Seconds for one sqlite-utils insert_all of `rows`, same pragmas as the trail."""
    db = Database(path)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute(f"PRAGMA synchronous = {durability.upper()}")
    started = time.perf_counter()
    db.table("events").insert_all(rows, batch_size=batch)
    spent = time.perf_counter() - started
    db.close()
    return spent


def bench_verify(path: Path) -> tuple[float, bool]:
    with SQLiteTrail(path) as trail:
        started = time.perf_counter()
        report = trail.verify()
        return time.perf_counter() - started, report.ok


def measure_round(
    root: Path, durability: str, n: int, batch: int, round_no: int, rows: list[dict[str, Any]]
) -> tuple[float, float, list[dict[str, Any]]]:
    """One round's seconds for the trail and the raw insert (which goes first alternates),
    and the rows the trail stored (the raw insert's input: read once, on the first round)."""
    trail_path = root / f"trail-{durability}-{round_no}.db"
    raw_path = root / f"raw-{durability}-{round_no}.db"
    if round_no % 2 and rows:
        raw_secs = bench_raw(raw_path, durability, rows, batch)
        trail_secs = bench_trail(trail_path, durability, n, batch)
    else:
        trail_secs = bench_trail(trail_path, durability, n, batch)
        rows = rows or stored_rows(trail_path)
        raw_secs = bench_raw(raw_path, durability, rows, batch)
    raw_path.unlink()
    if round_no:
        trail_path.unlink()  # the first round's trail is kept for verify
    return trail_secs, raw_secs, rows


def bench_durability(root: Path, durability: str, n: int, batch: int, rounds: int) -> None:
    trail_rates, raw_rates, ratios = [], [], []
    rows: list[dict[str, Any]] = []
    for round_no in range(rounds):
        trail_secs, raw_secs, rows = measure_round(root, durability, n, batch, round_no, rows)
        trail_rates.append(n / trail_secs)
        raw_rates.append(n / raw_secs)
        ratios.append(raw_secs / trail_secs)
    trail_rate, raw_rate = statistics.median(trail_rates), statistics.median(raw_rates)
    ratio = statistics.median(ratios)
    print(
        f"durability={durability:<6}  SQLiteTrail.append {trail_rate:>9,.0f} ev/s   "
        f"raw insert_all {raw_rate:>9,.0f} ev/s   ratio {ratio:.2f}x "
        f"(rounds: {' '.join(f'{r:.2f}' for r in ratios)})"
    )
    figure(f"trail.append.{durability}", trail_rate, "events/s", baseline=raw_rate,
           ratio=ratio, target="ratio>=0.5")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="trail and raw, in turn")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (temp dir)")
    args = parser.parse_args(argv)
    n, batch = args.events, args.batch
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="docktrail-bench-") as tmp:
        root = Path(tmp)
        print(f"{n} events, batches of {batch}, {args.rounds} rounds, files under {root}")
        for durability in ("normal", "full"):
            bench_durability(root, durability, n, batch, max(1, args.rounds))
        verify_secs, ok = bench_verify(root / "trail-normal-0.db")
        print(f"verify(): {n / verify_secs:,.0f} ev/s ({verify_secs:.2f} s, ok={ok})")
        figure("trail.verify_rate", n / verify_secs, "events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
