"""Renamed arguments: the old names of one vocabulary kept one release, with a warning.

Written here rather than with `diffusers.utils.deprecate`: that helper counts releases of diffusers
itself (it raises once diffusers reaches the removal version), not of idgen.
"""

from __future__ import annotations

import warnings
from typing import Any

from idgen.errors import IdgenError

REMOVAL = "idgen 0.2"


def take_renamed(kwargs: dict, old: str, new: str, value: Any, default: Any = None) -> Any:
    """The value of argument `new`, also accepted under its old name `old`.

    `old` is popped from `kwargs` (the caller's `**kwargs`) with a `FutureWarning` naming the new
    name; `value` is what the caller received as `new` (`default` when not given). Both given: an
    `IdgenError`, since they could disagree.
    """
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    if value is not default:
        raise IdgenError(f"`{old}` is the old name of `{new}`; give only `{new}`.")
    warnings.warn(f"`{old}` is deprecated and will be removed in {REMOVAL}; use `{new}`.", FutureWarning, stacklevel=3)
    return old_value


def renamed_attributes(module_name: str, namespace: dict, renamed: dict[str, str]):
    """A module `__getattr__` serving the old names in `renamed` (`old -> new`) of the objects in
    `namespace` (the module's `globals()`) with a `FutureWarning`, for one release.

    The old name gives the very same object (a class keeps its identity, so `isinstance`, pickles
    and diffusers' `model_index.json` class names are unaffected).
    """

    def __getattr__(name: str):
        if name in renamed:
            warnings.warn(f"`{module_name}.{name}` is deprecated and will be removed in {REMOVAL}; use "
                          f"`{renamed[name]}`.", FutureWarning, stacklevel=2)
            return namespace[renamed[name]]
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__
