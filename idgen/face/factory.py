"""`get_face_analyzer`: the one place that chooses and caches a face-analysis backend.

Apart from `analyzer.py` (the protocol the backends implement), so that the backends import the
protocol and this module imports the backends, without a circle.
"""

from __future__ import annotations

from typing import Optional

from idgen.errors import IdgenError
from idgen.models.config import load_config
from idgen.face.analyzer import FaceAnalyzer
from idgen.face.backends.dlib import DlibFaceAnalyzer
from idgen.face.backends.insightface import InsightFaceAnalyzer, find_pack

_ANALYZERS: dict = {}


def get_face_analyzer(backend: Optional[str] = None, **kwargs) -> FaceAnalyzer:
    """The face analyzer for `backend`, created once per (backend, kwargs, insightface pack found).

    `backend` None → `IDGEN_FACE_BACKEND` → `"face_backend"` of `$IDGEN_HOME/config.json` →
    "insightface" when a local model pack is found, else "dlib" (ships its models in pip packages;
    always available offline).
    """
    backend = backend or load_config().face_backend
    pack = find_pack(kwargs.get("pack"), kwargs.get("root")) if backend in (None, "insightface") else None
    if backend is None:
        backend = "insightface" if pack is not None else "dlib"
    # the pack found is part of the key: another IDGEN_HOME (or a pack installed meanwhile) is another analyzer
    key = (backend, tuple(sorted(kwargs.items())), pack)
    if key not in _ANALYZERS:
        if backend == "dlib":
            _ANALYZERS[key] = DlibFaceAnalyzer(**kwargs)
        elif backend == "insightface":
            _ANALYZERS[key] = InsightFaceAnalyzer(**kwargs)
        else:
            raise IdgenError(f"unknown face backend {backend!r}; choose 'dlib' or 'insightface'.")
    return _ANALYZERS[key]
