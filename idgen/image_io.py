"""Safe image loading: one entry point that turns a path, bytes, PIL image or array into an RGB
uint8 array, with size limits and clear errors for missing, corrupt or huge files."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from idgen.errors import DatasetError, ImageReadError

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

#: Default limits: 64 MiB per file and 40 megapixels (a 6.3k x 6.3k photo); override per call
#: or with IDGEN_MAX_IMAGE_BYTES / IDGEN_MAX_IMAGE_PIXELS.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_IMAGE_BYTES = int(os.environ.get("IDGEN_MAX_IMAGE_BYTES", 64 * 1024 * 1024))
MAX_IMAGE_PIXELS = int(os.environ.get("IDGEN_MAX_IMAGE_PIXELS", 40_000_000))


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            f"{what} is {width}x{height} = {width * height} pixels, above the limit of "
            f"{max_pixels}; resize it or raise IDGEN_MAX_IMAGE_PIXELS."
        )


def load_image(
    image: ImageInput,
    *,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> np.ndarray:
    """Load `image` as an RGB uint8 array `[H, W, 3]`.

    Accepts a file path, encoded bytes, a PIL image (any mode), or an array `[H, W]`,
    `[H, W, 3]` (RGB) or `[H, W, 4]` (RGBA, alpha dropped). EXIF orientation is applied.

    Raises:
        ImageReadError: missing, unreadable, corrupt, empty, or over `max_bytes`/`max_pixels`.
    """
    what = "image"
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        what = f"image file {str(path)!r}"
        if not path.is_file():
            raise ImageReadError(f"{what} does not exist or is not a file.")
        size = path.stat().st_size
        if size == 0:
            raise ImageReadError(f"{what} is empty (0 bytes).")
        if size > max_bytes:
            raise ImageReadError(f"{what} is {size} bytes, above the limit of {max_bytes}.")
        image = path.read_bytes()
    if isinstance(image, (bytes, bytearray)):
        if len(image) > max_bytes:
            raise ImageReadError(f"{what} is {len(image)} bytes, above the limit of {max_bytes}.")
        try:
            pil = Image.open(io.BytesIO(image))
            _check_pixels(pil.width, pil.height, max_pixels, what)
            pil.load()
        except ImageReadError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageReadError(f"{what} could not be decoded as an image ({e}).") from None
        image = pil
    if isinstance(image, Image.Image):
        _check_pixels(image.width, image.height, max_pixels, what)

        image = ImageOps.exif_transpose(image).convert("RGB")
        return np.asarray(image, dtype=np.uint8).copy()
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ImageReadError(
                f"image array must be [H, W], [H, W, 3] or [H, W, 4]; got shape {tuple(image.shape)}."
            )
        _check_pixels(arr.shape[1], arr.shape[0], max_pixels, what)
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr[:, :, :3])
    raise ImageReadError(
        f"expected a path, bytes, PIL image or numpy array, got {type(image).__name__}."
    )


def list_photos(root: Union[str, os.PathLike]) -> list[Path]:
    """Image files (`IMAGE_SUFFIXES`, any case) under `root`, recursively, sorted: the order that
    keys and shares follow. Raises DatasetError when `root` is not a folder or holds none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder of photos.")
    photos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise DatasetError(f"{root} holds no photos ({', '.join(IMAGE_SUFFIXES)}).")
    return photos
