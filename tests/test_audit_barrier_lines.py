"""`AuditBarriers.seen_in` passes over lines that cannot be ours without searching them
for the mark: only a USER record (after a ``node=`` prefix, maybe) can be one of ours."""

from __future__ import annotations

import os
import random

from listener.sources.auditd.barrier import _CANDIDATES, MARK, AuditBarriers

GS = "\x1d"


class Channel:
    def send(self, text: str) -> None:
        return None

    def close(self) -> None:
        return None


def ours(barriers: AuditBarriers, number: int, serial: int, prefix: str = "") -> str:
    return (
        f"{prefix}type=USER msg=audit(1700000000.000:{serial}): pid={os.getpid()} uid=0 "
        f"auid=4294967295 ses=4294967295 msg='{MARK} nonce={barriers.nonce} n={number}'"
        f'{GS}UID="root" AUID="unset"'
    )


def test_seen_in_finds_ours_with_and_without_a_node_prefix() -> None:
    barriers = AuditBarriers(Channel)
    barriers._sent = {1: 10, 2: 20, 3: 30}  # as the sender thread records them
    syscall = "type=SYSCALL msg=audit(1700000000.000:5): arch=c000003e syscall=59"
    lines = [
        syscall,
        ours(barriers, 1, 6),
        syscall + f" comm='{MARK} nonce={barriers.nonce} n=3'",  # the mark, not a USER record
        ours(barriers, 2, 7, prefix="node=web1 "),
        "x" + ours(barriers, 3, 8),  # garbage before type=
        ours(barriers, 9, 9),  # never sent
    ]
    assert barriers.seen_in(lines) == frozenset({1, 3})
    assert barriers.passed_ns == 20 and barriers.counts["seen"] == 2


def test_only_lines_starting_as_a_user_record_can_be_ours() -> None:
    barriers = AuditBarriers(Channel)
    rng = random.Random(3)
    base = [ours(barriers, 1, 1), ours(barriers, 1, 2, prefix="node=a "), "type=USER msg=audit("]
    pieces = ["x", " ", "node=", "type=USER msg=audit(", "): ", f"pid={os.getpid()} ", "'", "\x00"]
    for _ in range(20_000):
        line = rng.choice(base)
        for _ in range(rng.randint(0, 3)):
            at = rng.randint(0, len(line))
            if rng.random() < 0.5:
                line = line[:at] + rng.choice(pieces) + line[at:]
            else:
                line = line[:at] + line[at + rng.randint(1, 6) :]
        if barriers.number_of(line) is not None:
            assert line.startswith(_CANDIDATES), line
