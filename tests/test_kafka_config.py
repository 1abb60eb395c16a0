"""The `kafka:` settings: credentials that fit the protocol, secrets never printed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from config.errors import ConfigError
from config.loader import load_config
from listener.cli import main
from sinks.kafka.client import consumer_options, producer_options

SASL = "kafka:\n  security_protocol: SASL_SSL\n  sasl_username: node-17\n"


def test_sasl_without_a_password_is_refused_with_its_place(tmp_path: Path) -> None:
    config = tmp_path / "docktrail.yaml"
    config.write_text(SASL)
    with pytest.raises(ConfigError, match=r"docktrail.yaml:1: kafka: .*needs sasl_username"):
        load_config(config, environ={})


def test_the_password_comes_from_the_environment_and_is_never_printed(tmp_path: Path) -> None:
    config = tmp_path / "docktrail.yaml"
    config.write_text(SASL)
    environ = {"DOCKTRAIL_KAFKA__SASL_PASSWORD": "s3cret-pw"}
    kafka = load_config(config, environ=environ).kafka
    assert kafka is not None
    options = producer_options(kafka)
    assert options["sasl_plain_password"] == "s3cret-pw"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512" and options["acks"] == "all"
    assert options["enable_idempotence"] is False
    assert consumer_options(kafka)["enable_auto_commit"] is False
    shown = CliRunner(env=environ).invoke(main, ["-c", str(config), "config", "show"])
    assert shown.exit_code == 0 and "sasl_username: node-17" in shown.output
    assert "s3cret-pw" not in shown.output and "s3cret-pw" not in repr(kafka)
