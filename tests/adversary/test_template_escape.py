"""Templates cannot read files outside templates_dir (issue 19, item 5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from config.errors import ConfigError
from listener.cli import main
from notifiers.render import Renderer, check_templates, sample_alert
from tests.notify_servers import WebhookServer

SECRET_LINE = "root-only-secret-line"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "shadow"
    secret.write_text(SECRET_LINE + "\n")
    os.chmod(secret, 0o600)
    return secret


def templates(tmp_path: Path) -> Path:
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "plain.en.body.j2").write_text('{% include "_s.j2" %}\n')
    return directory


def test_symlinked_partial_outside_is_refused(tmp_path: Path, outside: Path) -> None:
    directory = templates(tmp_path)
    (directory / "_s.j2").symlink_to(outside)
    with pytest.raises(ConfigError, match=r"_s\.j2: resolves to .*outside"):
        check_templates(directory)
    with pytest.raises(ConfigError, match="outside"):
        Renderer(directory)


def test_symlink_to_etc_shadow_is_refused(tmp_path: Path) -> None:
    directory = templates(tmp_path)
    (directory / "_s.j2").symlink_to("/etc/shadow")
    with pytest.raises(ConfigError, match="outside"):
        check_templates(directory)


def test_symlink_inside_the_directory_is_fine(tmp_path: Path) -> None:
    directory = templates(tmp_path)
    (directory / "_real.j2").write_text("inside {{ alert.rule }}")
    (directory / "_s.j2").symlink_to(directory / "_real.j2")
    message = Renderer(directory).render(
        [sample_alert()], family="plain", language="en", timezone="UTC"
    )
    assert message.body.strip() == "inside privileged-container"


def test_include_by_relative_path_cannot_leave(tmp_path: Path, outside: Path) -> None:
    directory = templates(tmp_path)
    (directory / "plain.en.body.j2").write_text('{% include "../shadow" %}\n')
    with pytest.raises(ConfigError):
        Renderer(directory).render([sample_alert()], family="plain", language="en", timezone="UTC")


def test_a_fifo_is_not_a_template(tmp_path: Path) -> None:
    directory = templates(tmp_path)
    os.mkfifo(directory / "_s.j2")
    with pytest.raises(ConfigError, match="not a regular file"):
        check_templates(directory)


def test_swap_after_start_is_not_read(tmp_path: Path, outside: Path) -> None:
    directory = templates(tmp_path)
    (directory / "_s.j2").write_text("harmless")
    renderer = Renderer(directory)
    (directory / "_s.j2").unlink()
    (directory / "_s.j2").symlink_to(outside)
    body = renderer.render([sample_alert()], family="plain", language="en", timezone="UTC").body
    assert SECRET_LINE not in body and "harmless" in body


def test_validate_and_notify_test_refuse_the_symlink(
    tmp_path: Path, outside: Path, webhook_server: WebhookServer
) -> None:
    directory = templates(tmp_path)
    (directory / "_s.j2").symlink_to(outside)
    config = tmp_path / "docktrail.yaml"
    destinations = [{"name": "hook", "url": webhook_server.mattermost_url()}]
    notifications = {"templates_dir": str(directory), "destinations": destinations}
    config.write_text(yaml.safe_dump({"notifications": notifications}))
    for command in (["validate"], ["notify", "test"]):
        result = CliRunner().invoke(main, ["-c", str(config), *command])
        assert result.exit_code == 2, result.output
        assert "outside" in result.output
    assert webhook_server.received == []
