"""Conditioning images: InstantID keypoint drawings and face masks. Pure functions."""

from __future__ import annotations

import math
from typing import Sequence, Union

import cv2
import numpy as np
from PIL import Image

from idgen.face.align import check_points
from idgen.face.types import Face
from idgen.image_io import max_image_pixels
from idgen.validation import InvalidArgumentError, check_integer

#: Colours of the 5 keypoints (RGB) in the official InstantID `draw_kps`.
KPS_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
#: Limbs: each eye and mouth corner to the nose tip.
KPS_LIMBS = [(0, 2), (1, 2), (3, 2), (4, 2)]

#: Largest |coordinate| drawn, in pixels: OpenCV draws in 32-bit integer coordinates (and no
#: image is this large), so farther points are refused rather than wrapped around.
MAX_COORDINATE = 2.0**24

SizeOrImage = Union[tuple[int, int], Image.Image, np.ndarray]


def _size_pair(size, what: str) -> tuple[int, int]:
    """`(width, height)` as two integers >= 1."""
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise InvalidArgumentError(f"{what} must be (width, height), got {size!r}.")
    return check_integer(f"{what} width", size[0], low=1), check_integer(f"{what} height", size[1], low=1)


def _canvas_size(image_or_size: SizeOrImage, what: str) -> tuple[int, int]:
    """The `(width, height)` of an image to allocate: a PIL image's, an array's `[H, W, ...]`, or a
    pair; each side >= 1 and at most `max_image_pixels()` pixels in all."""
    if isinstance(image_or_size, Image.Image):
        image_or_size = image_or_size.size
    elif isinstance(image_or_size, np.ndarray):
        if image_or_size.ndim < 2:
            raise InvalidArgumentError(f"{what} must be an image [H, W, ...], got shape {image_or_size.shape}.")
        image_or_size = (image_or_size.shape[1], image_or_size.shape[0])
    width, height = _size_pair(image_or_size, what)
    limit = max_image_pixels()
    if width * height > limit:
        raise InvalidArgumentError(
            f"{what} {width}x{height} is above the limit of {limit} pixels; use a smaller size or raise "
            "IDGEN_MAX_IMAGE_PIXELS."
        )
    return width, height


def draw_kps(image_or_size: SizeOrImage, kps: np.ndarray, color_list: Sequence[tuple[int, int, int]] = KPS_COLORS) -> Image.Image:
    """The InstantID keypoint image, identical to the official `draw_kps`.

    Black canvas of the image's size `(w, h)`; the 4 limbs eye/mouth→nose as filled ellipses of
    half-width 4 px at 60% intensity; then the 5 points as filled circles of radius 10 px. Points
    outside the canvas are drawn clipped (or not at all).

    Args:
        image_or_size: a PIL image / array (only its size is used) or `(width, height)`.
        kps: `[5, 2]` keypoints in ArcFace order, pixels.
        color_list: 5 RGB colours, one per keypoint (its limb takes the same colour at 60%).

    Raises:
        InvalidArgumentError: a size below 1 px or above the pixel limit, `kps` not 5 finite
            points within `MAX_COORDINATE`, fewer than 5 colours.
    """
    width, height = _canvas_size(image_or_size, "image_or_size")
    kps = check_points(kps, "kps", count=5, limit=MAX_COORDINATE)
    if len(color_list) < len(kps):
        raise InvalidArgumentError(f"color_list needs {len(kps)} colours (one per keypoint), got {len(color_list)}.")
    stickwidth = 4
    # uint8 throughout: the official float canvas scaled by 0.6 after drawing gives these very values
    canvas = np.zeros([height, width, 3], dtype=np.uint8)
    for a, b in KPS_LIMBS:
        x = kps[[a, b], 0]
        y = kps[[a, b], 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        polygon = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), stickwidth), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(canvas, polygon, tuple(int(c * 0.6) for c in color_list[a]))
    for i, (x, y) in enumerate(kps):
        cv2.circle(canvas, (int(x), int(y)), 10, color_list[i], -1)
    return Image.fromarray(canvas)


def draw_kps_many(image_or_size: SizeOrImage, kps_list: Sequence[np.ndarray]) -> Image.Image:
    """One keypoint image for several faces: the pixel-wise maximum of each face's drawing."""
    layers = [np.asarray(draw_kps(image_or_size, kps)) for kps in kps_list]
    if not layers:
        return Image.new("RGB", _canvas_size(image_or_size, "image_or_size"))
    return Image.fromarray(np.maximum.reduce(layers))


def resize_kps(kps: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Rescale keypoints `[N, 2]` from an image of `(w, h)` = `from_size` to `to_size`, x and y
    separately: the face is stretched unless both sizes have one aspect ratio (see `fit_kps`).

    Raises:
        InvalidArgumentError: a size below 1 px, or `kps` not finite `[N, 2]` within `MAX_COORDINATE`.
    """
    (fw, fh), (tw, th) = _size_pair(from_size, "from_size"), _size_pair(to_size, "to_size")
    points = check_points(kps, "kps", limit=MAX_COORDINATE).astype(np.float32)
    return points * np.array([tw / fw, th / fh], dtype=np.float32)


def fit_kps(kps: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Keypoints `[N, 2]` of an image of `(w, h)` = `from_size`, placed where they land when that
    image is fitted into a `to_size` canvas: one scale for x and y (the face keeps its proportions),
    centred, the rest padded.

    Raises:
        InvalidArgumentError: a size below 1 px, or `kps` not finite `[N, 2]` within `MAX_COORDINATE`.
    """
    (fw, fh), (tw, th) = _size_pair(from_size, "from_size"), _size_pair(to_size, "to_size")
    scale = min(tw / fw, th / fh)
    offset = np.array([tw - scale * fw, th - scale * fh], dtype=np.float32) / 2
    return check_points(kps, "kps", limit=MAX_COORDINATE).astype(np.float32) * np.float32(scale) + offset


def output_size_for(photo_size: tuple[int, int], *, min_side: int, max_side: int, base: int) -> tuple[int, int]:
    """The output `(w, h)` for a photo of `photo_size`, by the rule of the official InstantID demo
    (at SDXL size: `min_side=1024`, `max_side=1280`, `base=64`): scale the short side to `min_side`,
    then the long side to `max_side`, and round both sides down to a multiple of `base` (at least
    `base`). The aspect ratio is kept up to that rounding.

    Raises:
        InvalidArgumentError: a size or side below 1 px.
    """
    w, h = _size_pair(photo_size, "photo_size")
    min_side, max_side, base = (check_integer(name, value, low=1) for name, value in
                                (("min_side", min_side), ("max_side", max_side), ("base", base)))
    ratio = min_side / min(w, h)
    w, h = round(ratio * w), round(ratio * h)
    ratio = max_side / max(w, h)
    w, h = round(ratio * w), round(ratio * h)
    return max(base, w // base * base), max(base, h // base * base)


def _hull_points(face_or_points: Union[Face, np.ndarray], region: str) -> np.ndarray:
    """The points whose convex hull is the mask: given points as they are (checked by the caller),
    a face's dense landmarks, or an ellipse in its box."""
    if not isinstance(face_or_points, Face):
        return face_or_points
    face = face_or_points
    if face.landmarks is not None and len(face.landmarks) >= 17:
        points = face.landmarks
        if region == "face_hair":
            # Copy the upper half of the outline upwards by 60% of the landmark height to cover
            # the forehead and hair (dlib's 68 points stop at the eyebrows).
            height = points[:, 1].max() - points[:, 1].min()
            top = points[points[:, 1] <= np.median(points[:, 1])]
            points = np.concatenate([points, top - np.array([0.0, 0.6 * height], dtype=np.float32)])
        return points
    # Keypoints only: an ellipse inscribed in the box (taller for face+hair).
    x1, y1, x2, y2 = face.bbox
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    if region == "face_hair":
        cy, ry = cy - 0.25 * ry, ry * 1.25
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1).astype(np.float32)


def _as_mask(mask, image_size: tuple[int, int], what: str) -> np.ndarray:
    """A user mask (PIL / array `[H, W]` or `[H, W, C]`, 0–255 or 0–1) as float32 `[H, W]` in [0, 1].

    Raises:
        InvalidArgumentError: not an image or numeric array, another size, NaN or infinite values.
    """
    try:
        array = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidArgumentError(
            f"{what} must be a PIL image or a numeric array [H, W], got {type(mask).__name__}."
        ) from None
    if array.ndim == 3 and array.shape[2] > 0:
        array = array[..., 0]
    if array.ndim != 2:
        raise InvalidArgumentError(f"{what} must be [H, W] or [H, W, C], got shape {array.shape}.")
    if array.shape != (image_size[1], image_size[0]):
        raise InvalidArgumentError(
            f"{what} is {array.shape[1]}x{array.shape[0]} but the image is {image_size[0]}x{image_size[1]}."
        )
    if not np.isfinite(array).all():
        raise InvalidArgumentError(f"{what} has NaN or infinite values; use 0–255 or 0–1.")
    return np.clip(array / 255.0 if array.max() > 1.0 else array, 0.0, 1.0)


def _mask_width(name: str, value, image_size: tuple[int, int]) -> int:
    """A dilate/erode/feather width: an integer from 0 to the image's longer side."""
    return check_integer(name, value, low=0, high=max(image_size),
                         hint=" It is a width in pixels, at most the image's longer side.")


def face_mask(
    image_size: tuple[int, int],
    face_or_points: Union[Face, np.ndarray, None] = None,
    *,
    region: str = "face",
    user_mask=None,
    exclude=None,
    dilate: int = 0,
    erode: int = 0,
    feather: int = 0,
) -> np.ndarray:
    """A face mask `[H, W]` float32 in [0, 1] for inpainting and swap (1 = repaint).

    Args:
        image_size: `(width, height)` in pixels.
        face_or_points: a `Face` (dense landmarks if present, else an ellipse in its box) or
            points `[N, 2]` whose convex hull is the mask (custom landmarks).
        region: "face" (landmark hull), "face_hair" (hull extended up over forehead and hair) or
            "custom" (`user_mask` as given).
        user_mask: the "custom" region: PIL / array `[H, W]` (white = repaint).
        exclude: occluders to keep (hands, hair, glasses): PIL / array `[H, W]`, white = never
            repaint; removed after dilation, before feathering.
        dilate / erode: grow / shrink the mask by this many pixels (elliptical kernel).
        feather: Gaussian feather width in pixels (soft edge); the inside stays 1.
    """
    if region not in ("face", "face_hair", "custom"):
        raise InvalidArgumentError(f"region must be 'face', 'face_hair' or 'custom', got {region!r}.")
    width, height = image_size = _canvas_size(image_size, "image_size")
    dilate, erode, feather = (_mask_width(name, value, image_size) for name, value in
                              (("dilate", dilate), ("erode", erode), ("feather", feather)))
    if region == "custom":
        if user_mask is None:
            raise InvalidArgumentError("region='custom' needs `user_mask` (white = repaint).")
        mask = (_as_mask(user_mask, image_size, "user_mask") > 0.5).astype(np.uint8) * 255
    else:
        if face_or_points is None:
            raise InvalidArgumentError(f"region={region!r} needs a Face or landmark points.")
        points = check_points(_hull_points(face_or_points, region), "face_or_points", limit=MAX_COORDINATE)
        mask = np.zeros((height, width), dtype=np.uint8)
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 255)
    for amount, op in ((dilate, cv2.dilate), (erode, cv2.erode)):
        if amount > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * amount + 1, 2 * amount + 1))
            mask = op(mask, kernel)
    keep = None if exclude is None else _as_mask(exclude, image_size, "exclude") > 0.5
    if keep is not None:
        mask[keep] = 0
    out = mask.astype(np.float32) / 255.0
    if feather > 0:
        inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * feather + 1,) * 2)).astype(np.float32) / 255.0
        out = np.maximum(cv2.GaussianBlur(out, (0, 0), sigmaX=feather / 2.0), inner)
        if keep is not None:
            out[keep] = 0.0
    return np.clip(out, 0.0, 1.0)
