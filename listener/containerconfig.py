"""Compatibility path: the model moved to `listener.model.containerconfig`; import it from there."""

from listener.model.containerconfig import *  # noqa: F403
