"""The live service bounds and redacts Engine data like ingest (issue 19.3, 19.11).

`docktrail run` as a real process against the test dockerd.
"""

from __future__ import annotations

import stat
from collections.abc import Callable

from sinks.base import EventFilter
from tests.dockerd import BUSYBOX_REF, Dockerd, wait_until
from tests.test_run_live import Service, service_factory  # noqa: F401 - the shared fixture


def test_live_labels_are_capped_and_secret_labels_redacted(
    dockerd: Dockerd,
    service_factory: Callable[..., Service],  # noqa: F811
) -> None:
    service = service_factory(dockerd)
    big = "b" * (100 * 1024)
    dockerd.docker(
        "create", "--name", "adv-label", "--label", f"big={big}",
        "--label", "api_token=s3cr3tlive", BUSYBOX_REF, "true",
    )  # fmt: skip
    try:

        def created() -> bool:
            found = service.events(EventFilter(container="adv-label", action="create"))
            return any(e.source == "docker" for e in found)

        assert wait_until(created, 20), service.log_text()
    finally:
        dockerd.docker("rm", "adv-label")
    [event] = [
        e
        for e in service.events(EventFilter(container="adv-label", action="create"))
        if e.source == "docker"
    ]
    labels = event.attributes["labels"]
    assert labels["big"] == "b" * 65536
    assert event.attributes["truncated"]["attributes.labels.big"] == {
        "size": 100 * 1024,
        "cap": 65536,
    }
    assert labels["api_token"].startswith("redacted:hmac:")
    key = service.trail_path.with_suffix(".redact-key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert service.stop() == 0
    for path in service.trail_path.parent.glob("trail.db*"):
        assert b"s3cr3tlive" not in path.read_bytes()
