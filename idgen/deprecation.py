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
