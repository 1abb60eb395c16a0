"""Benchmark: the memory `run` holds for each container the host still has.

    .venv/bin/python bench/live_state.py [--live 20k,170k] [--repeat 1]
                                         [--cache /tmp/docktrail-live] [--rebuild]

`run` keeps what the trail knows of every container that has not been removed
(`KnownState`, and the rules' container table): memory that grows with the
containers a host keeps, not with the length of its trail. bench/growth.py's
host removes its containers round after round, as a host that redeploys does;
here is the other end: a trail of N containers, each created and started and
never removed (2N Engine events of the scenario's `miner` container, stored as
bench/growth.py stores its rounds, with the saved states of a clean stop; kept
in `--cache`). `docktrail run` starts on a copy, against bench/growth.py's
Engine stand-in, and its resident memory once running is compared with its
memory on an empty trail.

Output: `FIGURE live_state.run_rss.<N>` (MB, baseline: the empty trail's) and
`FIGURE live_state.kib_per_container.<N>` (the difference over N).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

from bench import growth  # noqa: E402

TEMPLATE_NAME = "miner"  # created and started in the scenario, and left running
STEP_NS = 1_000_000


def live_events(template: list[dict[str, Any]], containers: int) -> Iterator[dict[str, Any]]:
    """`create` then `start` of `containers` fresh containers, one millisecond apart."""
    pair = [
        raw
        for raw in template
        if raw.get("Type") == "container"
        and raw["Actor"]["Attributes"].get("name") == TEMPLATE_NAME
        and str(raw.get("Action")) in ("create", "start")
    ]
    if [raw["Action"] for raw in pair] != ["create", "start"]:
        raise SystemExit(f"the scenario has no create and start of {TEMPLATE_NAME!r}")
    when = template[0]["timeNano"]
    for n in range(containers):
        cid = hashlib.sha256(f"{pair[0]['Actor']['ID']}:live:{n}".encode()).hexdigest()
        for raw in pair:
            item: dict[str, Any] = json.loads(json.dumps(raw))
            item["id"] = item["Actor"]["ID"] = cid
            item["Actor"]["Attributes"]["name"] = f"{TEMPLATE_NAME}-live-{n}"
            when += STEP_NS
            item["timeNano"], item["time"] = when, when // 1_000_000_000
            yield item


def cached_trail(cache: Path, containers: int, rebuild: bool) -> Path:
    path = cache / f"live-{growth.cache_key()}-{growth.size_name(containers)}.db"
    if path.exists() and not rebuild:
        return path
    building = cache / f"building-{growth.size_name(containers)}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    template = growth.load_mix().template
    asyncio.run(growth.build_trail(building / "t.db", live_events(template, containers)))
    print(f"# built a trail of {containers:,} live containers", flush=True)
    return growth.install_built(building, path)


def rss_mb(path: Path | None, work: Path, repeat: int) -> list[float]:
    return [growth.run_start(growth.copy_trail(path, work / "r")).rss_mb for _ in range(repeat)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live", default="20k,170k", help="live containers, e.g. 20k,170k")
    parser.add_argument("--repeat", type=int, default=1, help="`run` starts per trail")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/docktrail-live"))
    parser.add_argument("--rebuild", action="store_true", help="build the cached trails again")
    args = parser.parse_args(argv)
    sizes = [growth.parse_size(s) for s in args.live.split(",") if s.strip()]
    args.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    cached = {n: cached_trail(args.cache, n, args.rebuild) for n in sizes}
    with tempfile.TemporaryDirectory(prefix="live-", dir=args.cache) as tmp:
        work = Path(tmp)
        empty = rss_mb(None, work, args.repeat)
        base = statistics.median(empty)
        figure("live_state.run_rss.empty", base, "MB", baseline=base, ratio=1.0, spread=empty)
        for n, path in cached.items():
            held = rss_mb(path, work, args.repeat)
            median, name = statistics.median(held), growth.size_name(n)
            figure(f"live_state.run_rss.{name}", median, "MB", baseline=base,
                   ratio=median / base, spread=held)  # fmt: skip
            per = [(mb - base) * 1024 / n for mb in held]
            figure(f"live_state.kib_per_container.{name}", statistics.median(per), "KiB",
                   spread=per)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
