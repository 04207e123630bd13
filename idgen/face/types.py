"""The `Face` record every face backend returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class Face:
    """One detected face, in the pixel coordinates of the source image.

    Attributes:
        bbox: `[4]` float32, `(x1, y1, x2, y2)` in pixels.
        score: detection confidence (backend-specific scale; higher is better).
        kps: `[5, 2]` float32 `(x, y)` pixels in InsightFace/ArcFace order: eye on the image's
            left, eye on the image's right, nose tip, mouth corner on the image's left, mouth
            corner on the image's right.
        image_size: `(width, height)` of the source image in pixels.
        landmarks: optional dense landmarks `[N, 2]` (dlib: 68 points; insightface: 106 or
            68x3 depending on the pack), pixels.
        embedding: optional raw (un-normalised) identity embedding `[D]` float32. InstantID uses
            this raw ArcFace vector; FaceID and Arc2Face use `normed_embedding`.
        embedding_model: name of the model that produced `embedding` (e.g. "arcface:antelopev2",
            "dlib_resnet_v1").
    """

    bbox: np.ndarray
    score: float
    kps: np.ndarray
    image_size: tuple[int, int]
    landmarks: Optional[np.ndarray] = None
    embedding: Optional[np.ndarray] = None
    embedding_model: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.bbox = np.asarray(self.bbox, dtype=np.float32).reshape(4)
        self.kps = np.asarray(self.kps, dtype=np.float32).reshape(5, 2)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 2)
        if self.embedding is not None:
            self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)

    @property
    def embedding_dim(self) -> Optional[int]:
        return None if self.embedding is None else int(self.embedding.shape[0])

    @property
    def normed_embedding(self) -> Optional[np.ndarray]:
        """L2-normalised `embedding` (`[D]` float32), or None."""
        if self.embedding is None:
            return None
        norm = float(np.linalg.norm(self.embedding))
        return self.embedding / max(norm, 1e-12)

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def to_dict(self, with_embedding: bool = False) -> dict:
        """JSON-ready record: `bbox`, `score`, `kps` (five `[x, y]`), `image_size`, and optionally
        `landmarks`/`embedding`."""
        out = {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 4),
            "kps": [[round(float(x), 2), round(float(y), 2)] for x, y in self.kps],
            "image_size": list(self.image_size),
            "embedding_model": self.embedding_model,
            "embedding_dim": self.embedding_dim,
        }
        if self.landmarks is not None:
            out["landmarks"] = [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks]
        if with_embedding and self.embedding is not None:
            out["embedding"] = [float(v) for v in self.embedding]
        return out
