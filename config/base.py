"""What every section of `docktrail.yaml` shares: strict models, and the severities."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
