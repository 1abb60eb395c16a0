from __future__ import annotations

from pathlib import Path

import pytest

from config.errors import ConfigError
from config.loader import load_config
from config.models import DocktrailConfig

FULL_EXAMPLE = """
trail:
  path: ./t.db
  durability: normal
  signing_key: ./t.key
docker:
  host: unix:///run/docker.sock
auditd:
  enabled: true
  log_file: /var/log/audit/audit.log
  keys: [docker, docker-cli]
rules:
  untrusted-image:
    trusted: ["docker.io/library/*"]
  container-churn:
    threshold: 20
    window_secs: 60
  privileged-container:
    enabled: true
    severity: critical
    exceptions:
      - image: "registry.internal/tools/*"
        reason: "node exporter needs host access"
notifications:
  destinations:
    - name: secops
      url: "wecombot://KEY"
      min_severity: high
      language: zh
      timezone: Asia/Shanghai
kafka:
  bootstrap_servers: "127.0.0.1:9092"
  topic: docktrail.events
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "docktrail.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.trail.path == Path("docktrail.db")
    assert config.docker.host == "unix:///var/run/docker.sock"
    assert config.signing_key_path() == Path("docktrail.key")
    assert config.auditd.keys == ["docker", "docker-cli"]


def test_design_example_is_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_EXAMPLE), environ={})
    assert config.trail.durability == "normal"
    assert config.rules.container_churn.threshold == 20
    assert config.rules.privileged_container.exceptions[0].reason.startswith("node exporter")
    assert config.notifications.destinations[0].language == "zh"
    assert config.kafka is not None and config.kafka.topic == "docktrail.events"


def test_docker_host_environment_wins(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_EXAMPLE), environ={"DOCKER_HOST": "tcp://h:2375"})
    assert config.docker.host == "tcp://h:2375"


def test_env_overrides_file_and_cli_overrides_env(tmp_path: Path) -> None:
    path = write(tmp_path, FULL_EXAMPLE)
    env = {
        "DOCKTRAIL_TRAIL__PATH": "/env.db",
        "DOCKTRAIL_RULES__CONTAINER_CHURN__THRESHOLD": "5",
        "DOCKTRAIL_AUDITD__KEYS": '["x"]',
    }
    config = load_config(path, environ=env)
    assert config.trail.path == Path("/env.db")
    assert config.rules.container_churn.threshold == 5
    assert config.rules.container_churn.window_secs == 60  # the file's other keys stay
    assert config.auditd.keys == ["x"]
    config = load_config(path, environ=env, overrides={"trail": {"path": "/cli.db"}})
    assert config.trail.path == Path("/cli.db")


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "trail:\n  path: /from-env-file.db\n")
    config = load_config(None, environ={"DOCKTRAIL_CONFIG": str(path)})
    assert config.trail.path == Path("/from-env-file.db")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trail:\n  pathh: x\n", ":2: trail.pathh: unknown setting"),
        (
            "rules:\n  container-churn:\n    threshold: lots\n",
            ":3: rules.container-churn.threshold: Input should be a valid integer",
        ),
        ("rules:\n  no-such-rule: {}\n", ":2: rules.no-such-rule: unknown setting"),
        (
            "notifications:\n  destinations:\n    - name: a\n      url: json://x\n"
            "      min_severity: huge\n",
            ":5: notifications.destinations.0.min_severity: Input should be",
        ),
        (
            "rules:\n  privileged-container:\n    exceptions:\n      - image: x\n",
            ":4: rules.privileged-container.exceptions.0.reason: Field required",
        ),
        ("trail: [1, 2\n", ":2:1: invalid YAML"),
        ("- a\n- b\n", ":1: the top level must be a mapping"),
    ],
)
def test_invalid_file_names_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert str(path) + expected in message


def test_invalid_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable DOCKTRAIL_TRAIL__BATCH_SIZE"):
        load_config(None, environ={"DOCKTRAIL_TRAIL__BATCH_SIZE": "many"})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_every_field_is_described() -> None:
    from pydantic import BaseModel

    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            for arg in getattr(field.annotation, "__args__", (field.annotation,)):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation)

    walk(DocktrailConfig)
    assert len(seen) > 8


def test_example_file_in_deploy_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "deploy" / "docktrail.example.yaml"
    config = load_config(example, environ={})
    assert config.rules.untrusted_image.trusted
