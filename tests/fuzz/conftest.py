"""Hypothesis profiles: bounded in CI, longer with `DOCKTRAIL_FUZZ=long`.

`ci` (the default) keeps the whole fuzz folder to well under a minute on a
shared two-core machine; `long` runs many more examples per property
(`DOCKTRAIL_FUZZ=long .venv/bin/pytest tests/fuzz`). No deadline: timing on a
shared machine says nothing about the code.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)
settings.register_profile(
    "long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("DOCKTRAIL_FUZZ", "ci"))
