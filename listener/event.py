"""Compatibility path: the model moved to `listener.model.event`; import it from there."""

from listener.model.event import *  # noqa: F403
