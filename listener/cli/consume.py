"""`docktrail consume`: the central fleet trail from Kafka.

Registered on the main group by `listener.cli`; like every command module, it imports only click at
module level.
"""

from __future__ import annotations

import logging
import sys

import click

from listener.cli.common import (
    State,
    existing_trail,
    handles_errors,
    main,
    pass_state,
    report_malformed,
)


@main.command()
@click.option("--once", is_flag=True,
              help="Stop once every partition is read to its end (default: SIGTERM).")  # fmt: skip
@click.option("--heads", "heads_of", metavar="HOST",
              help="Print the signed heads (checkpoints) received from HOST as JSON lines "
                   "and exit; reads only the central trail.")  # fmt: skip
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
@pass_state
@handles_errors
def consume(state: State, once: bool, heads_of: str | None, log_level: str) -> None:
    """Build the central trail from the hosts' Kafka records.

    Every host's chain is checked as it arrives (a gap, fork, rewind or bad
    signature is a `host-chain-broken` alert); the fleet rules run on the
    central trail and alerts go to the configured destinations.
    """
    if heads_of is not None:
        _print_heads(state, heads_of)
        return
    import asyncio
    import signal

    from listener.consume import consume as consume_records
    from listener.logs import setup_logging

    setup_logging(log_level)
    if log_level != "debug":  # aiokafka narrates every assignment and fetch at info
        logging.getLogger("aiokafka").setLevel(logging.WARNING)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        report = await consume_records(state.config, stop=stop, once=once)
        report_malformed(report.malformed)
        click.echo(report.summary())

    asyncio.run(run())
    sys.exit(0)


def _print_heads(state: State, host: str) -> None:
    import orjson

    from sinks.kafka.chains import host_heads

    with existing_trail(state) as trail:
        for head in host_heads(trail, host):
            click.echo(orjson.dumps(head).decode())
