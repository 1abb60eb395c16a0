"""The rules: `replay` over stored events, `rules list` and `rules test`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from listener.cli.common import (
    State,
    existing_trail,
    flush_outbox,
    handles_errors,
    main,
    pass_state,
    table_format_option,
    until_option,
    wants_delivery,
)


@main.command()
@click.option("--rules", "rules_file",
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Rules file (a `rules:` section); default: the configured rules.")  # fmt: skip
@click.option("--since", help="Report findings on events from this time (state is rebuilt "
              "from everything before).")  # fmt: skip
@until_option
@click.option("--notify", default="none", show_default=True,
              type=click.Choice(["none", "dry", "live"]),
              help="none: store nothing; dry: store the new alerts; live: store them and "
                   "send them to the configured destinations.")  # fmt: skip
@table_format_option
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")  # fmt: skip
@pass_state
@handles_errors
def replay(
    state: State,
    rules_file: Path | None,
    since: str | None,
    until: str | None,
    notify: str,
    fmt: str,
    progress: bool | None,
) -> None:
    """Re-evaluate the rules over stored events and report what fires.

    Only findings the trail does not hold yet are listed (a stricter rules
    file shows what it would add). With --notify none nothing is stored.
    """
    from config.loader import load_rules_file
    from listener.output import write_alerts
    from listener.progress import Progress, by_rule
    from listener.rules.engine import replay_trail, store_alerts
    from listener.timeparse import parse_time_ns

    rules = load_rules_file(rules_file) if rules_file else state.config.rules
    since_ns = parse_time_ns(since) if since else None
    until_ns = parse_time_ns(until) if until else None
    live = wants_delivery(state.config, notify)
    with existing_trail(state) as trail:
        head, _ = trail.head()
        with Progress("replay", head, progress) as bar:
            found = replay_trail(
                trail, rules, since_ns=since_ns, until_ns=until_ns, on_progress=bar.advance_to
            )
        if notify != "none" and found:
            store_alerts(trail, found, state.config.notifications if live else None)
    write_alerts(found, fmt, state.timezone())
    stored = "; stored" if notify != "none" and found else ""
    rules_fired = f" ({by_rule(a.rule for a in found)})" if found else ""
    click.echo(
        f"replay: {head} events evaluated in {bar.elapsed():.1f}s, "
        f"{len(found)} new findings{rules_fired}{stored}",
        err=True,
    )
    if live:
        stats = flush_outbox(state)
        click.echo("notifications: " + stats.summary(), err=True)


@main.group()
def rules() -> None:
    """The detection rules."""


@rules.command("list")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))  # fmt: skip
@pass_state
@handles_errors
def rules_list(state: State, fmt: str) -> None:
    """Every rule: id, severity (with configured overrides), CIS item, enabled."""
    import json

    from listener.rules.fleet import FLEET_RULES
    from listener.rules.registry import RULES

    configured = state.config.rules
    for index, rule in enumerate((*RULES, *FLEET_RULES)):
        settings = rule.settings(configured)
        row = {
            "rule": rule.meta.id,
            "severity": settings.severity or rule.meta.severity,
            "cis": rule.meta.cis,
            "enabled": settings.enabled,
            "exceptions": len(settings.exceptions),
            "description": rule.meta.description,
        }
        if fmt == "json":
            click.echo(json.dumps(row, ensure_ascii=False))
            continue
        if index == 0:
            click.echo(f"{'RULE':27} {'SEVERITY':9} {'CIS':29} {'ON':3} DESCRIPTION")
        on = "yes" if row["enabled"] else "no"
        click.echo(f"{row['rule']:27} {row['severity']:9} {row['cis']:29} {on:3} "
                   f"{row['description']}")  # fmt: skip


@rules.command("test")
@click.argument("cases_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@pass_state
@handles_errors
def rules_test(state: State, cases_file: Path) -> None:
    """Check table-driven expectations: each case is an event and the rules it must fire.

    Exit 0 when every case passes, 1 otherwise (each failure is explained).
    """
    from listener.rules.cases import run_cases

    results = run_cases(cases_file, state.config.rules)
    for result in results:
        mark = "ok  " if result.passed else "FAIL"
        click.echo(f"{mark} {result.name}" + ("" if result.passed else f": {result.problem}"))
    failed = sum(not r.passed for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
