"""Face alignment: pure functions mapping 5 keypoints onto a canonical template.

The similarity transform is the least-squares (Umeyama) fit insightface's `estimate_norm` uses,
so a 112 crop equals `insightface.utils.face_align.norm_crop(img, kps, 112)` and a 224 crop is
the CLIP-encoder crop of IP-Adapter-FaceID-Plus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import cv2
import numpy as np

from idgen.errors import IdgenError
from idgen.image_io import ImageInput, load_image

#: ArcFace 112x112 template, `[5, 2]` pixels, InsightFace keypoint order.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
#: FFHQ-style 512x512 template (facexlib / GFPGAN face restoration), `[5, 2]` pixels.
FFHQ_TEMPLATE_512 = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118]],
    dtype=np.float32,
)


@dataclass
class AlignedFace:
    """An aligned crop. `matrix` `[2, 3]` maps source pixels to crop pixels; `inverse` maps back."""

    image: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray


def template_for(size: int, mode: Literal["arcface", "ffhq"] = "arcface") -> np.ndarray:
    """The 5-point template `[5, 2]` for a `size` x `size` crop.

    "arcface" follows insightface's `estimate_norm`: sizes divisible by 112 scale the template by
    size/112; sizes divisible by 128 scale by size/128 and shift x by 8 * size/128.
    "ffhq" scales the FFHQ 512 template (more context: hair, chin) by size/512.
    """
    if mode == "ffhq":
        return FFHQ_TEMPLATE_512 * (size / 512.0)
    if size % 112 == 0:
        return ARCFACE_TEMPLATE * (size / 112.0)
    if size % 128 == 0:
        ratio = size / 128.0
        return ARCFACE_TEMPLATE * ratio + np.array([8.0 * ratio, 0.0], dtype=np.float32)
    raise ValueError(f"arcface alignment needs a size divisible by 112 or 128, got {size}.")


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping `src` `[N, 2]`
    onto `dst` `[N, 2]` (Umeyama 1991). Returns the `[2, 3]` float64 matrix."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a `[2, 3]` affine matrix."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def align_face(
    image: ImageInput,
    kps: np.ndarray,
    size: int = 112,
    mode: Literal["arcface", "ffhq"] = "arcface",
    border_value: int = 0,
) -> AlignedFace:
    """Warp `image` (a path, PIL image or `[H, W, 3]` uint8 array, see `load_image`) so the
    keypoints `kps` `[5, 2]` (pixels) land on the template.

    Returns the `size` x `size` crop with the forward and inverse matrices (for `paste_back`).

    Raises:
        ImageReadError: the image cannot be read; IdgenError: `kps` is not 5 finite points.
    """
    image = image if isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8 else load_image(image)
    points = np.asarray(kps, dtype=np.float64)
    if points.size != 10 or not np.isfinite(points).all():
        raise IdgenError(f"kps must be 5 finite (x, y) points [5, 2], got shape {points.shape}.")
    matrix = similarity_transform(points.reshape(5, 2), template_for(size, mode))
    crop = cv2.warpAffine(image, matrix, (size, size), borderValue=(border_value,) * 3)
    return AlignedFace(image=crop, matrix=matrix, inverse=invert_affine(matrix))


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a `[2, 3]` affine matrix to points `[N, 2]`."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def paste_back(
    image: np.ndarray,
    crop: np.ndarray,
    inverse: np.ndarray,
    mask: Optional[np.ndarray] = None,
    feather: int = 8,
) -> np.ndarray:
    """Paste an aligned `crop` back into `image` through the inverse matrix.

    Args:
        image: `[H, W, 3]` uint8, the original photo.
        crop: `[S, S, 3]` uint8, the (edited) aligned crop.
        inverse: `[2, 3]` crop-to-image matrix (`AlignedFace.inverse`).
        mask: optional `[S, S]` float in [0, 1] in crop space; default: the whole crop.
        feather: Gaussian feather of the seam in crop pixels (0 for a hard edge).

    Pixels outside the warped mask are returned unchanged, bit for bit.
    """
    h, w = image.shape[:2]
    s = crop.shape[0]
    if mask is None:
        mask = np.ones((s, s), dtype=np.float32)
        if feather > 0:
            mask = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=max(1, feather // 2))
    mask = mask.astype(np.float32)
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=feather / 2.0) * (mask > 0)
    warped = cv2.warpAffine(crop, inverse, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, inverse, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    blended = image.astype(np.float32) * (1.0 - alpha) + warped.astype(np.float32) * alpha
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[alpha[..., 0] <= 0] = image[alpha[..., 0] <= 0]
    return out
