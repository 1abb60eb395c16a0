"""Configuration of docktrail: models of `docktrail.yaml`, loading, errors.

Imports nothing else of docktrail, so every other package may import it.
"""

from config.errors import ConfigError, DocktrailError
from config.loader import load_config
from config.models import DocktrailConfig

__all__ = ["ConfigError", "DocktrailConfig", "DocktrailError", "load_config"]
