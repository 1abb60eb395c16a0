"""`proxy`: the peer-credential Docker socket proxy on its own."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from listener.cli.common import State, handles_errors, main, pass_state


@main.command()
@click.option("--listen", type=click.Path(path_type=Path), help="Socket the clients use.")
@click.option("--engine", type=click.Path(path_type=Path), help="The real Engine socket.")
@pass_state
@handles_errors
def proxy(state: State, listen: Path | None, engine: Path | None) -> None:
    """Peer-credential Docker socket proxy: every API call in the trail, with its client."""
    import asyncio

    from listener.logs import setup_logging
    from listener.proxy_app import proxy_loop_factory, run_proxy

    setup_logging("info")
    config = state.config
    updates = {k: v for k, v in (("listen", listen), ("engine", engine)) if v is not None}
    config.proxy = config.proxy.model_copy(update=updates)
    with asyncio.Runner(loop_factory=proxy_loop_factory(config)) as runner:
        code = runner.run(run_proxy(config))
    sys.exit(code)
