"""The JSON files the application writes (`record.json`, `metrics.json`): strict JSON only.

Python's `json` writes `NaN`/`Infinity` for non-finite floats, which strict parsers (JavaScript,
jq, most other languages) reject; a metric that could not be measured is `null` here.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np


def finite_values(values) -> list[float]:
    """The measured values of `values`: None and NaN/inf (not measured) left out, as floats."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def finite_mean(values) -> Optional[float]:
    """The mean of `finite_values(values)`; None when nothing was measured."""
    finite = finite_values(values)
    return sum(finite) / len(finite) if finite else None


def to_json_value(value: Any) -> Any:
    """`value` as plain JSON data: non-finite floats → None, numpy scalars/arrays → numbers/lists,
    dataclasses → dicts, paths and other objects → their `str`."""
    if isinstance(value, (bool, type(None), str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return to_json_value(value.item())
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if is_dataclass(value) and not isinstance(value, type):
        return to_json_value(asdict(value))
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_json_value(v) for v in value]
    return str(value)


def json_bytes(data: Any) -> bytes:
    """`data` as strict, indented JSON (see `to_json_value`), UTF-8."""
    return json.dumps(to_json_value(data), indent=2, allow_nan=False).encode()


def write_json(path: Path, data: Any) -> Path:
    """Write `data` to `path` as strict, indented JSON (see `to_json_value`); returns `path`."""
    path = Path(path)
    path.write_bytes(json_bytes(data))
    return path


def call_default(pipe, name: str) -> Any:
    """The default of argument `name` of `pipe.__call__`, looked up the class hierarchy when a
    class passes it on through `**kwargs` (None when no class declares one): the value a call
    that omits `name` uses, for the records."""
    for cls in type(pipe).__mro__:
        call = cls.__dict__.get("__call__")
        if call is None:
            continue
        parameter = inspect.signature(call).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return None
