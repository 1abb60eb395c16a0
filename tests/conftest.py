"""Shared fixtures. The private dockerd: one per test session (it takes seconds to start)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.kafka_broker import kafka_bootstrap  # noqa: F401 - shared fixture
from tests.kafka_tansu import tansu  # noqa: F401 - a broker a test restarts or freezes
from tests.notify_servers import smtp_server, webhook_server  # noqa: F401 - shared fixtures

if TYPE_CHECKING:
    from tests.dockerd import Dockerd


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    """A private dockerd with busybox imported as `registry.internal/base/busybox:1.36`.

    Skips locally (fails when CI=true) without root, dockerd, containerd or busybox.
    """
    # Imported here, not at module level: `tests.*` imports need the repo root on
    # sys.path (`python -m pytest`), and a conftest that fails to import would
    # break collection of every test, not only those using this fixture.
    from tests.dockerd import BUSYBOX_REF, Dockerd, unavailable_reason
    from tests.shared_data import missing_component

    reason = unavailable_reason()
    if reason is not None:
        missing_component(reason)
    daemon = Dockerd()
    try:
        daemon.start()
        daemon.import_busybox(BUSYBOX_REF)
        yield daemon
    finally:
        daemon.stop()
