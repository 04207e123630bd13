"""The `FaceAnalyzer` interface, face selection, and the backend factory."""

from __future__ import annotations

import copy
from typing import Optional, Union

import numpy as np

from idgen.errors import FaceNotFoundError, FaceTooSmallError, IdgenError, MultipleFacesError
from idgen.image_io import ImageInput, describe_image, load_image
from idgen.face.cache import LRUCache, image_key
from idgen.face.types import Face

Selection = Union[str, int]

#: Faces narrower than this many pixels are rejected by `get` unless `min_size` says otherwise.
DEFAULT_MIN_FACE_SIZE = 24
#: The smallest photo side and the most elongated photo (long side / short side) detection runs
#: on. SCRFD's smallest anchor is 16 px, and past 32:1 the detectors' resize to their input size
#: leaves the short side empty (OpenCV's `!dsize.empty()` error).
MIN_DETECTION_SIDE = 16
MAX_DETECTION_ASPECT = 32


def detectable(pixels: np.ndarray) -> bool:
    """Whether face detection can run on `pixels` `[H, W, 3]`: each side at least
    `MIN_DETECTION_SIDE` px and the long side at most `MAX_DETECTION_ASPECT` times the short one."""
    short, long = sorted(pixels.shape[:2])
    return short >= MIN_DETECTION_SIDE and long <= MAX_DETECTION_ASPECT * short


def check_detectable(pixels: np.ndarray, what: str = "image") -> None:
    """Refuse a photo too small or too elongated to hold a detectable face (see `detectable`).

    Raises:
        FaceNotFoundError: naming `what` and its size, and what detection needs.
    """
    if not detectable(pixels):
        height, width = pixels.shape[:2]
        raise FaceNotFoundError(
            f"{what} is {width}x{height} px; face detection needs at least {MIN_DETECTION_SIDE} px on each side "
            f"and an aspect ratio of at most {MAX_DETECTION_ASPECT}:1; use a larger photo or crop it around the face."
        )


class FaceAnalyzer:
    """Detects faces and computes keypoints and identity embeddings.

    Subclasses implement `_detect(image) -> list[Face]` on an RGB uint8 array. `detect` adds
    caching (by image content) and the documented order: largest box area first, ties broken
    by detection score, then left to right.
    """

    name: str = "base"
    embedding_model: Optional[str] = None
    embedding_dim: Optional[int] = None

    def __init__(self, cache_size: int = 256):
        self._cache = LRUCache(cache_size)

    def _detect(self, image: np.ndarray) -> list[Face]:  # pragma: no cover - abstract
        raise NotImplementedError

    def detect(self, image: ImageInput) -> list[Face]:
        """All faces in `image`, with embeddings, largest first. Results are cached by content.
        A photo too small or elongated to hold a detectable face (`detectable`) has none.

        Raises:
            ImageReadError: `image` cannot be read (see `load_image`).
        """
        pixels = load_image(image)
        if not detectable(pixels):
            return []
        faces = self._cache.get_or_compute(image_key(pixels), lambda: self._sorted(self._detect(pixels)))
        return copy.deepcopy(faces)

    @staticmethod
    def _sorted(faces: list[Face]) -> list[Face]:
        return sorted(faces, key=lambda f: (-f.area, -f.score, float(f.bbox[0])))

    def get(
        self,
        image: ImageInput,
        select: Selection = "largest",
        *,
        reference=None,
        min_size: Optional[int] = None,
    ) -> Union[Face, list[Face]]:
        """Detect and select faces.

        Args:
            select: "largest" (default), "all" (list, possibly empty is an error), "one"
                (exactly one face required), an int index into the largest-first order, or
                "reference" (the face whose embedding is closest to `reference`).
            reference: a `Face` or an embedding `[D]`, for `select="reference"`.
            min_size: minimum face width in pixels (default `DEFAULT_MIN_FACE_SIZE`).

        Raises:
            ImageReadError: `image` cannot be read.
            FaceNotFoundError: no face, or a photo too small or elongated for detection (the
                message names the file and its size).
            MultipleFacesError, FaceTooSmallError, IdgenError (bad `select`).
        """
        min_size = DEFAULT_MIN_FACE_SIZE if min_size is None else min_size
        pixels = load_image(image)
        check_detectable(pixels, describe_image(image))
        found = self.detect(pixels)
        if not found:
            raise FaceNotFoundError("no face was detected in the image.")
        faces = [f for f in found if min(f.width, f.height) >= min_size]
        if not faces:
            biggest = max(min(f.width, f.height) for f in found)
            raise FaceTooSmallError(
                f"{len(found)} face(s) found, the largest {biggest:.0f} px wide, below the minimum of "
                f"{min_size} px; use a closer or higher-resolution photo."
            )
        if select == "all":
            return faces
        if select == "largest":
            return faces[0]
        if select == "one":
            if len(faces) > 1:
                raise MultipleFacesError(
                    f"{len(faces)} faces were detected where exactly one is required; crop the photo "
                    "or choose one with select='largest', an index, or a reference identity."
                )
            return faces[0]
        if select == "reference":
            return faces[self._closest(faces, reference)]
        if isinstance(select, (int, np.integer)) and not isinstance(select, bool):
            if not -len(faces) <= select < len(faces):
                raise IdgenError(f"face index {select} is out of range: {len(faces)} face(s) detected.")
            return faces[select]
        raise IdgenError(f"select must be 'largest', 'all', 'one', 'reference' or an int, got {select!r}.")

    def _closest(self, faces: list[Face], reference) -> int:
        if reference is None:
            raise IdgenError("select='reference' needs `reference` (a Face or an embedding).")
        ref = reference.embedding if isinstance(reference, Face) else np.asarray(reference, dtype=np.float32)
        if ref is None or any(f.embedding is None for f in faces):
            raise IdgenError("select='reference' needs embeddings on both the reference and the faces.")
        if ref.shape != faces[0].embedding.shape:
            raise IdgenError(
                f"reference embedding has shape {ref.shape}, the analyzer's faces {faces[0].embedding.shape}; "
                "use the same backend for both."
            )
        return int(np.argmin([identity_distance(f.embedding, ref) for f in faces]))


def identity_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two L2-normalised embeddings (0 = same direction, 2 = opposite).

    For dlib's 128-d model the raw (already ~unit) vectors are the usual metric: same person < 0.6.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a / max(np.linalg.norm(a), 1e-12) - b / max(np.linalg.norm(b), 1e-12)))


def identity_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings, in [-1, 1]."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
