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

from idgen.image_io import ImageInput, load_image, max_image_pixels
from idgen.validation import InvalidArgumentError, check_integer

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


ALIGN_MODES = ("arcface", "ffhq")


def check_points(points, what: str, *, count: Optional[int] = None, limit: Optional[float] = None) -> np.ndarray:
    """`points` as a float64 array `[N, 2]` (N = `count` if given, else at least 1) of finite
    `(x, y)` pixels, each coordinate within `[-limit, limit]` if given.

    Raises:
        InvalidArgumentError: not numbers, the wrong number of points, NaN/infinite, or out of range.
    """
    expected = f"{what} must be {f'{count} ' if count else ''}finite (x, y) points [{count or 'N'}, 2]"
    try:
        array = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{expected}, got {type(points).__name__}.") from None
    if array.size == 0 or array.size % 2 or (count is not None and array.size != 2 * count):
        raise InvalidArgumentError(f"{expected}, got shape {array.shape}.")
    array = array.reshape(-1, 2)
    if not np.isfinite(array).all():
        raise InvalidArgumentError(f"{expected}; they hold NaN or infinity.")
    if limit is not None and np.abs(array).max() > limit:
        raise InvalidArgumentError(f"{what} must lie within {limit:.0f} px of the origin, got {np.abs(array).max():g}.")
    return array


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
    size = check_integer("size", size, low=1)
    if mode not in ALIGN_MODES:
        raise InvalidArgumentError(f"mode must be one of {ALIGN_MODES}, got {mode!r}.")
    if mode == "ffhq":
        return FFHQ_TEMPLATE_512 * (size / 512.0)
    if size % 112 == 0:
        return ARCFACE_TEMPLATE * (size / 112.0)
    if size % 128 == 0:
        ratio = size / 128.0
        return ARCFACE_TEMPLATE * ratio + np.array([8.0 * ratio, 0.0], dtype=np.float32)
    raise InvalidArgumentError(
        f"arcface alignment needs a size divisible by 112 or 128, got {size}; use e.g. 112, 224 or 512."
    )


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping `src` `[N, 2]`
    onto `dst` `[N, 2]` (Umeyama 1991). Returns the `[2, 3]` float64 matrix.

    Raises:
        InvalidArgumentError: points that are not finite `[N, 2]` of the same N, all of `src` at
            one place (no scale can be fitted), or coordinates so large the fit overflows.
    """
    src = check_points(src, "src")
    dst = check_points(dst, "dst", count=len(src))
    with np.errstate(over="ignore", invalid="ignore"):  # overflow shows as a non-finite matrix, refused below
        src_mean, dst_mean = src.mean(0), dst.mean(0)
        src_c, dst_c = src - src_mean, dst - dst_mean
        spread = src_c.var(0).sum()
        if spread == 0:
            raise InvalidArgumentError("the source points are all at one place; a similarity needs two distinct points.")
        cov = dst_c.T @ src_c / len(src)
        if not np.isfinite(cov).all() or not np.isfinite(spread):
            raise InvalidArgumentError("the points are too large for a similarity fit.")
        u, s, vt = np.linalg.svd(cov)
        d = np.ones(2)
        if np.linalg.det(cov) < 0:
            d[1] = -1.0
        rotation = u @ np.diag(d) @ vt
        scale = (s * d).sum() / spread
        translation = dst_mean - scale * rotation @ src_mean
        matrix = np.hstack([scale * rotation, translation[:, None]])
    if not np.isfinite(matrix).all():
        raise InvalidArgumentError("the points are too large or too close together for a similarity fit.")
    return matrix


def _check_affine(matrix, what: str) -> np.ndarray:
    """`matrix` as a finite float64 `[2, 3]` affine matrix with an invertible linear part."""
    array = np.asarray(matrix, dtype=np.float64)
    if array.shape != (2, 3) or not np.isfinite(array).all():
        raise InvalidArgumentError(f"{what} must be a finite [2, 3] affine matrix, got shape {array.shape}.")
    if not abs(np.linalg.det(array[:, :2])) > 0:
        raise InvalidArgumentError(f"{what} is singular (it maps the plane onto a line or a point).")
    return array


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a `[2, 3]` affine matrix.

    Raises:
        InvalidArgumentError: not a finite `[2, 3]` matrix, or singular (no inverse).
    """
    inverse = cv2.invertAffineTransform(_check_affine(matrix, "matrix"))
    if not np.isfinite(inverse).all():
        raise InvalidArgumentError("matrix is too close to singular to invert.")
    return inverse


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
        ImageReadError: the image cannot be read.
        InvalidArgumentError: `kps` is not 5 finite points (or all at one place), `size` is not a
            positive integer that fits `mode` and the pixel limit, `border_value` is not 0-255.
    """
    image = image if _is_rgb_array(image) else load_image(image)
    points = check_points(kps, "kps", count=5)
    size = check_integer("size", size, low=1)
    template = template_for(size, mode)
    limit = max_image_pixels()
    if size * size > limit:
        raise InvalidArgumentError(f"size {size} makes a crop of {size * size} pixels, above the limit of {limit}.")
    border_value = check_integer("border_value", border_value, low=0, high=255)
    matrix = similarity_transform(points, template)
    crop = cv2.warpAffine(image, matrix, (size, size), borderValue=(border_value,) * 3)
    return AlignedFace(image=crop, matrix=matrix, inverse=invert_affine(matrix))


def _is_rgb_array(image) -> bool:
    """Whether `image` is already what `load_image` returns (used as it is, without a copy)."""
    return (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
            and image.flags.c_contiguous and image.shape[0] > 0 and image.shape[1] > 0)


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

    Raises:
        InvalidArgumentError: arrays of other shapes or dtypes, a non-finite or singular
            `inverse`, a `feather` that is not an integer in `[0, S]`.
    """
    _check_paste_inputs(image, crop, mask)
    inverse = _check_affine(inverse, "inverse")
    h, w = image.shape[:2]
    s = crop.shape[0]
    feather = check_integer("feather", feather, low=0, high=s)
    if mask is None:
        mask = np.ones((s, s), dtype=np.float32)
        if feather > 0:
            mask = cv2.erode(mask, np.ones((3, 3), np.uint8), iterations=max(1, feather // 2))
    mask = np.asarray(mask, dtype=np.float32)
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=feather / 2.0) * (mask > 0)
    warped = cv2.warpAffine(crop, inverse, (w, h), flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(mask, inverse, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    blended = image.astype(np.float32) * (1.0 - alpha) + warped.astype(np.float32) * alpha
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[alpha[..., 0] <= 0] = image[alpha[..., 0] <= 0]
    return out


def _check_paste_inputs(image, crop, mask) -> None:
    """`paste_back`'s arrays: an RGB uint8 image, a square RGB uint8 crop, a finite crop-sized mask."""
    for what, array in (("image", image), ("crop", crop)):
        if not (isinstance(array, np.ndarray) and array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
                and min(array.shape[:2]) > 0):
            shape = getattr(array, "shape", None)
            raise InvalidArgumentError(f"{what} must be an RGB uint8 array [H, W, 3], got {type(array).__name__} {shape}.")
    if crop.shape[0] != crop.shape[1]:
        raise InvalidArgumentError(f"crop must be square [S, S, 3], got {crop.shape}.")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != crop.shape[:2] or mask.dtype.kind not in "biuf" or not np.isfinite(mask).all():
            raise InvalidArgumentError(f"mask must be finite numbers [{crop.shape[0]}, {crop.shape[1]}] (the crop's size), "
                                       f"got {mask.dtype} {mask.shape}.")
