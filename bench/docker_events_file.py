"""A big Docker Engine events file built from a real capture, for `docktrail ingest`.

    .venv/bin/python bench/docker_events_file.py --events 200000 --out FILE

Repeats the events of the scenario-a capture (/work/shared/fixtures/scenario-a)
with fresh 64-hex ids (container, image, exec, network ids rewritten per copy)
and times shifted past the previous copy, so every event is new to the trail
and the mix of actions, attributes and labels is the real one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

CAPTURE = Path("/work/shared/fixtures/scenario-a/events.jsonl")
_HEX_ID = re.compile(r"[0-9a-f]{64}")


def capture_lines(path: Path = CAPTURE) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_events(out: Path, count: int, source: Path = CAPTURE) -> int:
    """Write `count` events to `out`; returns the bytes written."""
    lines = capture_lines(source)
    texts = [json.dumps(line, separators=(",", ":")) for line in lines]
    t0 = min(line["timeNano"] for line in lines)
    span = max(line["timeNano"] for line in lines) - t0 + 1_000_000
    written = 0
    with out.open("w") as fh:
        for i in range(count):
            copy, k = divmod(i, len(lines))
            line = lines[k]
            shift = copy * span
            text = _HEX_ID.sub(lambda m, c=copy: _fresh(m.group(0), c), texts[k])
            new_ns = line["timeNano"] + shift
            text = text.replace(f'"timeNano":{line["timeNano"]}', f'"timeNano":{new_ns}')
            text = text.replace(f'"time":{line["time"]}', f'"time":{new_ns // 1_000_000_000}')
            written += fh.write(text + "\n")
    return written


def _fresh(hex_id: str, copy: int) -> str:
    return hex_id if copy == 0 else hashlib.sha256(f"{hex_id}/{copy}".encode()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    size = write_events(args.out, args.events)
    print(f"{args.events} events, {size} bytes ({size / args.events:.0f} B/event) in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
