"""Models built from values a source has already proven valid, without pydantic's validation.

Validation is the costliest step of turning one Engine event into an `Event`
(about a quarter of it), and `model_construct` is slower still for models
with many defaults. `trusted` sets what validation would have set: the field
values in declaration order, the fields given, no extra and no private
values. It is only for values whose checks by hand are equivalent to the
model's (exact `str` where the field is `str`, exact non-bool `int` where it
is `int`, fresh containers); tests/test_docker_normalize_fast.py checks that a
revalidated copy is identical.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

Model = TypeVar("Model", bound=BaseModel)

# The slots BaseModel declares for them, set through their descriptors: a third
# cheaper than setattr, which looks each one up again.
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def trusted(cls: type[Model], values: dict[str, Any], given: set[str]) -> Model:
    """A `cls` holding `values` (every field, in declaration order); `given`: the fields set."""
    model = _new(cls)
    _set_dict(model, values)
    _set_fields_set(model, given)
    _set_extra(model, None)
    _set_private(model, None)
    return model


def defaults(cls: type[BaseModel]) -> dict[str, Any]:
    """The values of a `cls` built with no arguments (fields without a mutable default)."""
    return dict(cls().__dict__)
