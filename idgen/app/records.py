"""The JSON files the application writes (`record.json`, `metrics.json`): strict JSON only.

Python's `json` writes `NaN`/`Infinity` for non-finite floats, which strict parsers (JavaScript,
jq, most other languages) reject; a metric that could not be measured is `null` here.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np


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


def write_json(path: Path, data: Any) -> Path:
    """Write `data` to `path` as strict, indented JSON (see `to_json_value`); returns `path`."""
    path = Path(path)
    path.write_text(json.dumps(to_json_value(data), indent=2, allow_nan=False))
    return path
