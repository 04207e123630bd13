"""Safe image loading: one entry point that turns a path, bytes, PIL image or array into an RGB
uint8 array, with size limits and clear errors for missing, corrupt or huge files.

Every failure is an `ImageReadError` naming the file (or "image" for in-memory input) and saying
what to do; the byte and pixel limits are checked before anything is decoded, so a tiny file that
declares a huge image (a decompression bomb) costs nothing.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from idgen.errors import ConfigError, DatasetError, ImageReadError
from idgen.validation import check_integer

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: Default limits: 64 MiB per file and 40 megapixels (a 6.3k x 6.3k photo); override per call or
#: with IDGEN_MAX_IMAGE_BYTES / IDGEN_MAX_IMAGE_PIXELS (read when an image is loaded, not at import).
DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
#: Encoded formats that are decoded (Pillow's names; JPEG covers the multi-picture JPEGs phones
#: write). Others are refused unread: some run external programs (EPS runs Ghostscript).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
#: PIL modes that `convert("RGB")` cannot take directly, and the mode to go through.
_RGB_DETOURS = {"La": "LA"}
#: Array dtype kinds that hold pixel values: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"


def _env_limit(name: str, default: int) -> int:
    """The positive integer in environment variable `name`, or `default` when it is unset or blank."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {raw!r}; fix or unset it.")
    return value


def max_image_bytes() -> int:
    """The largest image file accepted, in bytes: IDGEN_MAX_IMAGE_BYTES or 64 MiB."""
    return _env_limit("IDGEN_MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES)


def max_image_pixels() -> int:
    """The largest image accepted, in pixels (width x height): IDGEN_MAX_IMAGE_PIXELS or 40 M."""
    return _env_limit("IDGEN_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)


def __getattr__(name: str) -> int:
    """`MAX_IMAGE_BYTES` / `MAX_IMAGE_PIXELS`, the limits in force, read from the environment when
    asked for (module constants would break every import on a malformed variable)."""
    if name == "MAX_IMAGE_BYTES":
        return max_image_bytes()
    if name == "MAX_IMAGE_PIXELS":
        return max_image_pixels()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe_image(image: object) -> str:
    """How messages name `image`: `image file 'x.png'` for a path, else `image`."""
    if isinstance(image, (str, os.PathLike)):
        return f"image file {os.fspath(image)!r}"
    return "image"


def _check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageReadError(
            f"{what} is {width}x{height} = {width * height} pixels, above the limit of "
            f"{max_pixels}; resize it or raise IDGEN_MAX_IMAGE_PIXELS."
        )
    if width == 0 or height == 0:
        raise ImageReadError(f"{what} is empty ({width}x{height} pixels); use a real photo.")


def check_regular_file(path: Path, what: str, error: type[ImageReadError] = ImageReadError) -> os.stat_result:
    """The `stat` of `path` (symlinks followed) when it is a regular file.

    Raises:
        error: `path` does not exist, cannot be looked up (a symlink loop, a name too long, a
            parent folder without permission), or is a folder, a FIFO, a socket or a device.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{what} does not exist or is not a file; check the path.") from None
    except (OSError, ValueError) as e:  # symlink loop, name too long, a parent folder not searchable, NUL
        reason = getattr(e, "strerror", None) or str(e)
        raise error(f"{what} cannot be opened ({reason}); check the path.") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} is a folder, not a file; pass one of the files in it.")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what} is not a regular file (a FIFO, socket or device); save it to a file first.")
    return info


def _read_file(path: Path, what: str, max_bytes: int) -> bytes:
    """The bytes of the regular file `path` (symlinks followed), at most `max_bytes` of them."""
    size = check_regular_file(path, what).st_size
    if size == 0:
        raise ImageReadError(f"{what} is empty (0 bytes); the file is truncated or was never written.")
    if size > max_bytes:
        raise ImageReadError(
            f"{what} is {size} bytes, above the limit of {max_bytes}; shrink it or raise IDGEN_MAX_IMAGE_BYTES."
        )
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ImageReadError(f"{what} cannot be read ({e.strerror or e}); check its permissions.") from None
    if len(data) > max_bytes:  # it grew after the size check
        raise ImageReadError(f"{what} is over the limit of {max_bytes} bytes; shrink it or raise IDGEN_MAX_IMAGE_BYTES.")
    return data


def _bomb_error(what: str, max_pixels: int) -> ImageReadError:
    """The error for a header Pillow refused itself, before `max_pixels` could be checked: it
    declares more than twice `Image.MAX_IMAGE_PIXELS`, Pillow's decompression-bomb limit."""
    pillow_limit = 2 * Image.MAX_IMAGE_PIXELS
    if max_pixels < pillow_limit:
        return ImageReadError(f"{what} declares more than {pillow_limit} pixels, above the limit of {max_pixels}; "
                              "resize it or raise IDGEN_MAX_IMAGE_PIXELS.")
    return ImageReadError(f"{what} declares more than {pillow_limit} pixels, above the limit of Pillow's "
                          "decompression-bomb check; resize it.")


def _decode(data: bytes, what: str, max_bytes: int, max_pixels: int) -> Image.Image:
    """Encoded `data` as a loaded PIL image (the first frame of an animated or multi-page file),
    its declared size checked against `max_pixels` before any pixel is decoded."""
    if len(data) > max_bytes:
        raise ImageReadError(
            f"{what} is {len(data)} bytes, above the limit of {max_bytes}; shrink it or raise IDGEN_MAX_IMAGE_BYTES."
        )
    if not data:
        raise ImageReadError(f"{what} is empty (0 bytes); the file is truncated or was never written.")
    try:
        pil = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{what} could not be decoded as an image: not a {'/'.join(IMAGE_FORMATS)} file; convert it to PNG or JPEG."
        ) from None
    except Image.DecompressionBombError:
        raise _bomb_error(what, max_pixels) from None
    except Exception as e:  # Pillow's parsers raise many types (OSError, SyntaxError, struct.error...) on bad headers
        raise ImageReadError(f"{what} could not be decoded as an image ({type(e).__name__}: {e}).") from None
    _check_pixels(pil.width, pil.height, max_pixels, what)
    try:
        pil.load()
    except Exception as e:  # truncated or corrupt pixel data, whatever the decoder
        raise ImageReadError(
            f"{what} could not be decoded as an image ({type(e).__name__}: {e}); the file is truncated or corrupt."
        ) from None
    return pil


def _pil_to_rgb(image: Image.Image, what: str, max_pixels: int) -> np.ndarray:
    """A PIL image of any mode, EXIF orientation applied, as RGB uint8 `[H, W, 3]`. 16-bit and
    float modes go through `_to_uint8` (Pillow's own conversion clips them at 255)."""
    _check_pixels(image.width, image.height, max_pixels, what)
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode.startswith("I") or image.mode == "F":
            return _array_to_rgb(np.asarray(image), what, max_pixels)
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")  # what Pillow asks for palette transparency; alpha dropped below
        if image.mode in _RGB_DETOURS:
            image = image.convert(_RGB_DETOURS[image.mode])
        return np.array(image.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # a lazily decoded image may fail only now (truncated data, bad EXIF)
        raise ImageReadError(f"{what} could not be decoded as an image ({type(e).__name__}: {e}).") from None


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Pixel values as uint8: bool as 0/255, uint16 as 16-bit (0-65535), floats as 0-1 when none is
    above 1 (else 0-255), other integers as 0-255; NaN is 0, out-of-range values are clipped."""
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind == "b":
        return values.astype(np.uint8) * 255
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:  # any byte order (PIL's I;16B)
        return (values // 257).astype(np.uint8)
    if values.dtype.kind == "f":
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
        if values.size and float(values.max()) <= 1.0:
            values = values * 255.0
    return np.clip(values, 0, 255).astype(np.uint8)


def _array_to_rgb(array: np.ndarray, what: str, max_pixels: int) -> np.ndarray:
    """An array `[H, W]`, `[H, W, 3]` or `[H, W, 4]` of numbers as RGB uint8 `[H, W, 3]`."""
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageReadError(
            f"{what}: an image array must be [H, W], [H, W, 3] or [H, W, 4]; got shape {tuple(array.shape)}."
        )
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise ImageReadError(
            f"{what}: an image array must hold numbers (bool, int or float), got dtype {array.dtype}; "
            "convert it with .astype(np.uint8)."
        )
    _check_pixels(array.shape[1], array.shape[0], max_pixels, what)
    pixels = _to_uint8(np.asarray(array))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.ascontiguousarray(pixels[:, :, :3])


def load_image(image: ImageInput, *, max_bytes: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Load `image` as a C-contiguous RGB uint8 array `[H, W, 3]` (an RGB uint8 array comes back as
    it is, or as a contiguous copy).

    Accepts a file path (JPEG, PNG, WebP, BMP, GIF, TIFF: the first frame of an animated or
    multi-page file), encoded bytes, a PIL image (any mode; EXIF orientation is applied; 16-bit
    modes are scaled, not clipped), or an array `[H, W]`, `[H, W, 3]` (RGB) or `[H, W, 4]` (RGBA,
    alpha dropped) of bool (0/255), uint8, uint16 (16-bit), other integers (0-255, clipped) or
    floats (0-1 if no value is above 1, else 0-255; NaN is 0).

    Args:
        max_bytes / max_pixels: limits on the encoded size and on width x height; default
            `max_image_bytes()` / `max_image_pixels()` (IDGEN_MAX_IMAGE_BYTES / IDGEN_MAX_IMAGE_PIXELS).

    Raises:
        ImageReadError: missing, unreadable (permissions, a folder, a FIFO or device, a symlink
            loop), empty, corrupt or truncated, of another format, or over `max_bytes`/`max_pixels`.
        ConfigError: IDGEN_MAX_IMAGE_BYTES / IDGEN_MAX_IMAGE_PIXELS is not a positive integer.
    """
    max_bytes = max_image_bytes() if max_bytes is None else check_integer("max_bytes", max_bytes, low=1)
    max_pixels = max_image_pixels() if max_pixels is None else check_integer("max_pixels", max_pixels, low=1)
    what = describe_image(image)
    if isinstance(image, (str, os.PathLike)):
        image = _read_file(Path(image), what, max_bytes)
    if isinstance(image, (bytes, bytearray, memoryview)):
        image = _decode(bytes(image), what, max_bytes, max_pixels)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, what, max_pixels)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, what, max_pixels)
    raise ImageReadError(f"expected a path, bytes, PIL image or numpy array, got {type(image).__name__}.")


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
