"""Metering (CIS 6.2): low-rate snapshots of per-container CPU, memory, pids and
block I/O from the Engine's one-shot stats, stored beside the trail.

The snapshots live in a SQLite file of their own next to the trail (created
0600), not in the hash chain: they are measurements, not events, and they are
deleted after `retention_days`. One-shot stats carry no previous CPU reading,
so CPU use is the difference from this container's previous snapshot.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from listener.posture.check import Check, Status

_NS = 1_000_000_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    time_ns INTEGER NOT NULL, container_id TEXT NOT NULL, name TEXT,
    cpu_ns INTEGER, system_ns INTEGER, online_cpus INTEGER, cpu_percent REAL,
    memory_bytes INTEGER, memory_limit INTEGER, pids INTEGER,
    blkio_read INTEGER, blkio_write INTEGER, limited INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_time ON samples (time_ns);
CREATE INDEX IF NOT EXISTS samples_container ON samples (container_id, time_ns);
"""


@dataclass(slots=True)
class Sample:
    """One container's snapshot."""

    time_ns: int
    container_id: str
    name: str
    cpu_ns: int
    system_ns: int
    online_cpus: int
    cpu_percent: float | None  # of one CPU, since this container's previous snapshot
    memory_bytes: int
    memory_limit: int  # 0: no limit of the container's own
    pids: int
    blkio_read: int
    blkio_write: int
    limited: bool  # the container has a memory or CPU limit of its own


def _blkio(stats: Mapping[str, Any]) -> tuple[int, int]:
    entries = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    read = sum(int(e.get("value") or 0) for e in entries if str(e.get("op")).lower() == "read")
    write = sum(int(e.get("value") or 0) for e in entries if str(e.get("op")).lower() == "write")
    return read, write


def sample_from_stats(
    container: Mapping[str, Any], stats: Mapping[str, Any], host_cfg: Mapping[str, Any]
) -> Sample:
    """A snapshot from one-shot stats; `host_cfg` is the container's HostConfig."""
    cpu = stats.get("cpu_stats") or {}
    memory = stats.get("memory_stats") or {}
    read, write = _blkio(stats)
    own_memory = int(host_cfg.get("Memory") or 0)
    own_cpu = int(host_cfg.get("NanoCpus") or 0) or int(host_cfg.get("CpuQuota") or 0)
    name = str((container.get("Names") or ["?"])[0]).lstrip("/")
    return Sample(
        time_ns=time.time_ns(),
        container_id=str(container["Id"]),
        name=name,
        cpu_ns=int((cpu.get("cpu_usage") or {}).get("total_usage") or 0),
        system_ns=int(cpu.get("system_cpu_usage") or 0),
        online_cpus=int(cpu.get("online_cpus") or 0),
        cpu_percent=None,
        # cgroup v2 counts the page cache as usage; docker stats subtracts inactive_file.
        memory_bytes=max(
            0,
            int(memory.get("usage") or 0)
            - int((memory.get("stats") or {}).get("inactive_file") or 0),
        ),
        memory_limit=own_memory,
        pids=int((stats.get("pids_stats") or {}).get("current") or 0),
        blkio_read=read,
        blkio_write=write,
        limited=bool(own_memory or own_cpu),
    )


class MeteringStore:
    """The snapshots file (0600). Blocking; use from a worker thread."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:  # `top` and `posture` read, never write
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            if not _has_samples(self._conn):  # the writer made the file, not yet its table
                self._conn.close()
                self._conn = sqlite3.connect(":memory:")
                self._conn.executescript(_SCHEMA)
            return
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)  # measurements of this host: not for every local user
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def previous(self, container_id: str) -> tuple[int, int] | None:
        row = self._conn.execute(
            "SELECT cpu_ns, system_ns FROM samples WHERE container_id = ? "
            "ORDER BY time_ns DESC LIMIT 1",
            (container_id,),
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else None

    def add(self, samples: Sequence[Sample], retention_days: float) -> None:
        for sample in samples:
            before = self.previous(sample.container_id)
            if before is not None and sample.system_ns > before[1]:
                share = (sample.cpu_ns - before[0]) / (sample.system_ns - before[1])
                sample.cpu_percent = round(max(0.0, share) * max(sample.online_cpus, 1) * 100, 2)
        horizon = time.time_ns() - int(retention_days * 86_400 * _NS)
        with self._conn:
            self._conn.executemany(
                "INSERT INTO samples VALUES (:time_ns, :container_id, :name, :cpu_ns, "
                ":system_ns, :online_cpus, :cpu_percent, :memory_bytes, :memory_limit, :pids, "
                ":blkio_read, :blkio_write, :limited)",
                [asdict(sample) for sample in samples],
            )
            self._conn.execute("DELETE FROM samples WHERE time_ns < ?", (horizon,))

    def latest(self, within_ns: int | None = None) -> list[Sample]:
        """The last snapshot of each container (those newer than `within_ns` ago)."""
        since = 0 if within_ns is None else time.time_ns() - within_ns
        rows = self._conn.execute(
            "SELECT s.* FROM samples s JOIN (SELECT container_id, MAX(time_ns) AS t FROM samples "
            "GROUP BY container_id) l ON s.container_id = l.container_id AND s.time_ns = l.t "
            "WHERE s.time_ns >= ? ORDER BY s.time_ns DESC",
            (since,),
        ).fetchall()
        return [_sample(row) for row in rows]

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0])


def _sample(row: Sequence[Any]) -> Sample:
    t, cid, name, cpu, system, cpus, percent, memory, limit, pids, read, write, limited = row
    return Sample(
        t, cid, name, cpu, system, cpus, percent, memory, limit, pids, read, write, bool(limited)
    )


@contextlib.contextmanager
def opened(path: Path, *, readonly: bool = False) -> Iterator[MeteringStore]:
    store = MeteringStore(path, readonly=readonly)
    try:
        yield store
    finally:
        store.close()


@dataclass(slots=True)
class Snapshot:
    """What one metering round read."""

    samples: list[Sample]
    unread: list[str]  # running containers whose stats could not be read (a slow Engine)


def snapshot(
    engine: Any, listed: Sequence[Mapping[str, Any]], pool: ThreadPoolExecutor
) -> Snapshot:
    """Blocking: one-shot stats and limits of each running container (gone ones skipped).

    dockerd answers a stats call at its collector's next tick (once a second),
    so the calls run side by side in `pool`: a snapshot of many containers
    takes a few ticks, not one per container.
    """
    running = [c for c in listed if str(c.get("State")) == "running"]
    found = list(pool.map(lambda container: _sample_of(engine, container), running))
    samples = [sample for sample in found if isinstance(sample, Sample)]
    unread = [str(c["Id"]) for c, sample in zip(running, found, strict=True) if sample is _UNREAD]
    return Snapshot(samples, unread)


_UNREAD = object()  # the stats call failed: the container may be there, only slow to answer


def _sample_of(engine: Any, container: Mapping[str, Any]) -> Sample | object | None:
    """The container's sample; None when it is gone; `_UNREAD` when its stats failed."""
    from config.errors import SourceError

    cid = str(container["Id"])
    try:
        stats = engine.api(
            f"cannot read stats of {cid[:12]}",
            lambda client: client.stats(cid, stream=False, one_shot=True),
        )
        inspect = engine.inspect_container(cid)
    except SourceError:
        return _UNREAD
    if inspect is None:
        return None  # removed meanwhile
    if not stats:
        return _UNREAD
    return sample_from_stats(container, stats, inspect.get("HostConfig") or {})


def judged(fresh: Snapshot, previous: Sequence[Sample]) -> list[Sample] | None:
    """The samples to judge resource usage on, or None when this snapshot cannot say.

    A stats call that fails under load does not mean the container stopped: it keeps
    its previous sample, so that a busy Engine does not flip the posture (a usage
    check that says "nothing running" one round and "warn" the next). Without a
    previous sample for each unread container, the snapshot judges nothing.
    """
    before = {sample.container_id: sample for sample in previous}
    if any(cid not in before for cid in fresh.unread):
        return None
    return fresh.samples + [before[cid] for cid in fresh.unread]


def usage_check(samples: Sequence[Sample], host_memory: int, host_cpus: int, share: float) -> Check:
    """Containers without limits of their own using more than `share` of the host."""
    if not samples:
        # a snapshot of nothing (no container running, or each gone while metered) says
        # nothing is using the host: no finding, and no daily "warn" to cry wolf with
        return Check("resource-usage", "6.2", "pass", "no running container in the last snapshot")
    heavy = []
    for sample in samples:
        if sample.limited:
            continue
        memory_share = sample.memory_bytes / host_memory if host_memory else 0.0
        cpu_share = (sample.cpu_percent or 0.0) / 100 / max(host_cpus, 1)
        if max(memory_share, cpu_share) > share:
            heavy.append(f"{sample.name} ({max(memory_share, cpu_share):.0%} of the host)")
    unlimited = sum(not s.limited for s in samples)
    if heavy:
        detail = f"{len(heavy)} container(s) without limits above {share:.0%} of the host"
        return Check("resource-usage", "6.2", "fail", detail, len(heavy), tuple(heavy))
    status: Status = "warn" if unlimited else "pass"
    detail = f"{len(samples)} metered, {unlimited} without limits, none above {share:.0%}"
    return Check("resource-usage", "6.2", status, detail, unlimited)


def _has_samples(conn: sqlite3.Connection) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'samples'"
    return conn.execute(query).fetchone() is not None
