"""The untrusted-image alert of a container says how it was made: the CLI call behind
its create (`run`, `create`, `compose up`), or `create` when none is (the raw API)."""

from __future__ import annotations

from config.models import RulesConfig
from listener.model.event import Who
from listener.rules.base import RuleContext
from listener.rules.registry import evaluate
from tests.test_rules import event

MINER = "docker.io/randomuser/miner:latest"


def summary(who: Who) -> str:
    ctx = RuleContext(rules=RulesConfig.model_validate({"untrusted-image": {}}))
    created = event("create", image=MINER).model_copy(update={"who": who})
    (found,) = [f for f in evaluate(created, ctx) if f.rule == "untrusted-image"]
    return found.summary


def test_the_verb_is_the_cli_call_or_a_plain_create() -> None:
    assert summary(Who(method="unknown")).endswith("(create)")
    run = Who(login="bob", method="auditd-cli", command=f"docker run -d {MINER}")
    assert summary(run).endswith("(run)")
    compose = Who(login="bob", method="auditd-cli", command="/usr/bin/python3 "
                  "/usr/bin/docker-compose up -d")  # fmt: skip
    assert summary(compose).endswith("(compose up)")
    assert summary(Who(method="label", login="x", command="'unbalanced")).endswith("(create)")
