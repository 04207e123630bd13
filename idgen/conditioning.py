"""Conditioning images: InstantID keypoint drawings and face masks. Pure functions."""

from __future__ import annotations

import math
from typing import Sequence, Union

import cv2
import numpy as np
from PIL import Image

from idgen.errors import IdgenError
from idgen.face.types import Face

#: Colours of the 5 keypoints (RGB) in the official InstantID `draw_kps`.
KPS_COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
#: Limbs: each eye and mouth corner to the nose tip.
KPS_LIMBS = [(0, 2), (1, 2), (3, 2), (4, 2)]

SizeOrImage = Union[tuple[int, int], Image.Image, np.ndarray]


def _size(image_or_size: SizeOrImage) -> tuple[int, int]:
    if isinstance(image_or_size, Image.Image):
        return image_or_size.size
    if isinstance(image_or_size, np.ndarray):
        return image_or_size.shape[1], image_or_size.shape[0]
    return int(image_or_size[0]), int(image_or_size[1])


def draw_kps(image_or_size: SizeOrImage, kps: np.ndarray, color_list: Sequence[tuple[int, int, int]] = KPS_COLORS) -> Image.Image:
    """The InstantID keypoint image, identical to the official `draw_kps`.

    Black canvas of the image's size `(w, h)`; the 4 limbs eye/mouth→nose as filled ellipses of
    half-width 4 px at 60% intensity; then the 5 points as filled circles of radius 10 px.

    Args:
        image_or_size: a PIL image / array (only its size is used) or `(width, height)`.
        kps: `[5, 2]` keypoints in ArcFace order, pixels.
    """
    width, height = _size(image_or_size)
    kps = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
    stickwidth = 4
    canvas = np.zeros([height, width, 3])
    for a, b in KPS_LIMBS:
        x = kps[[a, b], 0]
        y = kps[[a, b], 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        polygon = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), stickwidth), int(angle), 0, 360, 1)
        canvas = cv2.fillConvexPoly(canvas, polygon, color_list[a])
    canvas = (canvas * 0.6).astype(np.uint8)
    for i, (x, y) in enumerate(kps):
        canvas = cv2.circle(canvas, (int(x), int(y)), 10, color_list[i], -1)
    return Image.fromarray(canvas.astype(np.uint8))


def draw_kps_many(image_or_size: SizeOrImage, kps_list: Sequence[np.ndarray]) -> Image.Image:
    """One keypoint image for several faces: the pixel-wise maximum of each face's drawing."""
    layers = [np.asarray(draw_kps(image_or_size, kps)) for kps in kps_list]
    if not layers:
        width, height = _size(image_or_size)
        return Image.new("RGB", (width, height))
    return Image.fromarray(np.maximum.reduce(layers))


def resize_kps(kps: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Rescale keypoints `[N, 2]` from an image of `(w, h)` = `from_size` to `to_size`, x and y
    separately: the face is stretched unless both sizes have one aspect ratio (see `fit_kps`)."""
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return np.asarray(kps, dtype=np.float32).reshape(-1, 2) * np.array([sx, sy], dtype=np.float32)


def fit_kps(kps: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Keypoints `[N, 2]` of an image of `(w, h)` = `from_size`, placed where they land when that
    image is fitted into a `to_size` canvas: one scale for x and y (the face keeps its proportions),
    centred, the rest padded."""
    scale = min(to_size[0] / from_size[0], to_size[1] / from_size[1])
    offset = np.array([to_size[0] - scale * from_size[0], to_size[1] - scale * from_size[1]], dtype=np.float32) / 2
    return np.asarray(kps, dtype=np.float32).reshape(-1, 2) * np.float32(scale) + offset


def output_size_for(photo_size: tuple[int, int], *, min_side: int, max_side: int, base: int) -> tuple[int, int]:
    """The output `(w, h)` for a photo of `photo_size`, by the rule of the official InstantID demo
    (at SDXL size: `min_side=1024`, `max_side=1280`, `base=64`): scale the short side to `min_side`,
    then the long side to `max_side`, and round both sides down to a multiple of `base` (at least
    `base`). The aspect ratio is kept up to that rounding."""
    w, h = photo_size
    ratio = min_side / min(w, h)
    w, h = round(ratio * w), round(ratio * h)
    ratio = max_side / max(w, h)
    w, h = round(ratio * w), round(ratio * h)
    return max(base, w // base * base), max(base, h // base * base)


def _hull_points(face_or_points: Union[Face, np.ndarray], region: str) -> np.ndarray:
    if not isinstance(face_or_points, Face):
        return np.asarray(face_or_points, dtype=np.float32).reshape(-1, 2)
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
    """A user mask (PIL / array `[H, W]` or `[H, W, C]`, 0–255 or 0–1) as float32 `[H, W]` in [0, 1]."""
    array = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask, dtype=np.float32)
    if array.ndim == 3:
        array = array[..., 0]
    if array.shape != (image_size[1], image_size[0]):
        raise IdgenError(f"{what} is {array.shape[1]}x{array.shape[0]} but the image is {image_size[0]}x{image_size[1]}.")
    return np.clip(array / 255.0 if array.max() > 1.0 else array, 0.0, 1.0)


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
        raise IdgenError(f"region must be 'face', 'face_hair' or 'custom', got {region!r}.")
    width, height = image_size
    if region == "custom":
        if user_mask is None:
            raise IdgenError("region='custom' needs `user_mask` (white = repaint).")
        mask = (_as_mask(user_mask, image_size, "user_mask") > 0.5).astype(np.uint8) * 255
    else:
        if face_or_points is None:
            raise IdgenError(f"region={region!r} needs a Face or landmark points.")
        mask = np.zeros((height, width), dtype=np.uint8)
        hull = cv2.convexHull(np.round(_hull_points(face_or_points, region)).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255)
    for amount, op in ((dilate, cv2.dilate), (erode, cv2.erode)):
        if amount > 0:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * amount + 1, 2 * amount + 1))
            mask = op(mask, kernel)
    if exclude is not None:
        mask[_as_mask(exclude, image_size, "exclude") > 0.5] = 0
    out = mask.astype(np.float32) / 255.0
    if feather > 0:
        inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * feather + 1,) * 2)).astype(np.float32) / 255.0
        out = np.maximum(cv2.GaussianBlur(out, (0, 0), sigmaX=feather / 2.0), inner)
        if exclude is not None:
            out[_as_mask(exclude, image_size, "exclude") > 0.5] = 0.0
    return np.clip(out, 0.0, 1.0)
