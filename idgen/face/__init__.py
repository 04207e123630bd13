"""Face analysis: detection, 5 ArcFace-order keypoints, dense landmarks, identity embeddings,
and alignment.

- `get_face_analyzer(backend)` → `FaceAnalyzer` ("dlib": offline default, 128-d; "insightface":
  local ONNX pack, 512-d ArcFace as the official adapters expect).
- `FaceAnalyzer.get(image, select="largest"|"all"|"one"|"reference"|index)` → `Face` record(s).
- `align_face(image, kps, size, mode)` / `paste_back(...)`: similarity alignment and its inverse.
"""

from idgen.face.align import (
    ARCFACE_TEMPLATE, FFHQ_TEMPLATE_512, AlignedFace, align_face, paste_back, similarity_transform, template_for,
    transform_points,
)
from idgen.face.analyzer import DEFAULT_MIN_FACE_SIZE, FaceAnalyzer, identity_distance, identity_similarity
from idgen.face.factory import get_face_analyzer
from idgen.face.tracking import FaceTracker, TrackedFace, TrackingResult, track_faces
from idgen.face.types import Face

__all__ = [
    "ARCFACE_TEMPLATE",
    "DEFAULT_MIN_FACE_SIZE",
    "FFHQ_TEMPLATE_512",
    "AlignedFace",
    "Face",
    "FaceAnalyzer",
    "FaceTracker",
    "TrackedFace",
    "TrackingResult",
    "align_face",
    "get_face_analyzer",
    "identity_distance",
    "identity_similarity",
    "paste_back",
    "similarity_transform",
    "template_for",
    "track_faces",
    "transform_points",
]
