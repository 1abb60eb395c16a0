"""`docktrail rules test CASES.yaml`: table-driven expectations for the rules.

```yaml
rules:                       # optional: rule settings for these cases
  untrusted-image: {trusted: ["registry.internal/*"]}
cases:
  - name: privileged run fires
    events:                  # evaluated in order; expectations are on the last
      - {type: container, action: create, actor: {name: dbg, image: busybox},
         config: {origin: argv, privileged: true}, who: {login: alice}}
    fires: [privileged-container]     # must fire, not suppressed
    not: [docker-socket-mount]        # must not fire
    suppressed: []                    # must fire, suppressed by an exception
```

`event:` (one) may stand for `events:`. Missing event fields get harmless
defaults (`source: docker`, `host: test`, a time, an id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.errors import ConfigError
from config.models import RulesConfig
from listener.model.event import Event, natural_id
from listener.rules.base import Finding, RuleContext
from listener.rules.registry import evaluate

BASE_TIME_NS = 1_700_000_000_000_000_000


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(description="What the case shows.")
    event: dict[str, Any] | None = Field(None, description="One event (or use events).")
    events: list[dict[str, Any]] = Field(default_factory=list, description="Events in order.")
    fires: list[str] = Field(default_factory=list, description="Rules that must fire.")
    not_: list[str] = Field(default_factory=list, alias="not", description="Must not fire.")
    suppressed: list[str] = Field(default_factory=list, description="Must fire suppressed.")
    attribution_available: bool = Field(True, description="An audit log is being read.")


class CasesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: dict[str, Any] | None = Field(None, description="Rule settings for these cases.")
    cases: list[Case] = Field(description="The cases.")


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    passed: bool
    problem: str = ""


def run_cases(path: Path, default_rules: RulesConfig) -> list[CaseResult]:
    spec = _load(path)
    rules = RulesConfig.model_validate(spec.rules) if spec.rules is not None else default_rules
    return [_run(case, index, rules, path) for index, case in enumerate(spec.cases)]


def _load(path: Path) -> CasesFile:
    try:
        return CasesFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read cases: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None


def _run(case: Case, index: int, rules: RulesConfig, path: Path) -> CaseResult:
    raw_events = case.events or ([case.event] if case.event else [])
    if not raw_events:
        return CaseResult(case.name, False, "no event given")
    ctx = RuleContext(rules=rules, attribution_available=case.attribution_available)
    findings: list[Finding] = []
    try:
        for number, raw in enumerate(raw_events):
            findings = evaluate(_event(raw, index, number), ctx)
    except ValidationError as exc:
        raise ConfigError(f"{path}: cases.{index}: event: {exc.errors()[0]['msg']}") from None
    return _judge(case, findings)


def _event(raw: dict[str, Any], case: int, number: int) -> Event:
    data = {
        "id": natural_id("case", case, number),
        "time_ns": BASE_TIME_NS + number * 1_000_000,
        "source": "docker",
        "host": "test",
        "type": "container",
        **raw,
    }
    data.setdefault("seq", number + 1)
    return Event.model_validate(data)


def _judge(case: Case, findings: list[Finding]) -> CaseResult:
    active = {f.rule for f in findings if f.suppressed_by is None}
    quiet = {f.rule for f in findings if f.suppressed_by is not None}
    problems = [f"{rule} did not fire" for rule in case.fires if rule not in active]
    problems += [f"{rule} fired" for rule in case.not_ if rule in active]
    problems += [f"{rule} was not suppressed" for rule in case.suppressed if rule not in quiet]
    return CaseResult(case.name, not problems, "; ".join(problems))
