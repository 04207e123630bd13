"""The provenance of one application job (`idgen generate`, `inpaint`, `swap`, `restore` and the
demo's tabs): which model files made it (by SHA-256) and with which settings, as the
`idgen.provenance.Provenance` written into every output file and its watermark.

On by default; `IDGEN_PROVENANCE=0` turns both the metadata and the watermark off (for pipelines
that add their own downstream)."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

from idgen.models import load_config, resolve_component
from idgen.provenance import Provenance, model_sha256

#: What `models` says of the tiny embedded default (its weights are random, made at start-up).
EMBEDDED_MODELS = {"embedded-default": "random weights (idgen.testing), no model files"}


def provenance_enabled() -> bool:
    """False when `IDGEN_PROVENANCE` is 0/false/no/off."""
    return os.environ.get("IDGEN_PROVENANCE", "1").strip().lower() not in ("0", "false", "no", "off")


def model_hashes(names: Sequence[str], *, embedded: bool, overrides: Optional[Mapping[str, Optional[str]]] = None) -> dict:
    """`component -> SHA-256` of the registry components `names` as this job resolved them
    (`overrides`: the paths the request gave, by component); `EMBEDDED_MODELS` for the default."""
    if embedded:
        return dict(EMBEDDED_MODELS)
    config, overrides = load_config(), overrides or {}
    return {name: model_sha256(resolve_component(name, config=config, override=overrides.get(name)).path)
            for name in names}


def job_provenance(operation: str, method: str, names: Sequence[str], *, embedded: bool, parameters: dict,
                   overrides: Optional[Mapping[str, Optional[str]]] = None,
                   face_swap: Optional[bool] = None) -> Optional[Provenance]:
    """The job's `Provenance`, or None when provenance is turned off (`face_swap`: see
    `Provenance`; None = only for swaps)."""
    if not provenance_enabled():
        return None
    return Provenance(operation=operation, method=method, parameters=parameters, face_swap=face_swap,
                      models=model_hashes(names, embedded=embedded, overrides=overrides))
