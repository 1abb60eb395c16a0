"""Compatibility path: the model moved to `listener.model.alert`; import it from there."""

from listener.model.alert import *  # noqa: F403
