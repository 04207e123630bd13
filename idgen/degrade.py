"""Synthetic degradations for blind face restoration: y = JPEG_q[(x ⊛ k_σ)↓r + n_δ]↑r.

The blind-restoration model of GFPGAN (`ffhq_degradation_dataset.py` with basicsr's
`degradations.py`) and CodeFormer: blur with an isotropic or anisotropic Gaussian kernel, downsample
by r (bilinear), add Gaussian noise of standard deviation δ (0–255 units), JPEG-compress at quality
q, resize back (bilinear); then colour jitter and, rarely, greyscale. Plus the other SVFR tasks:
colorization (grey input) and inpainting (free-form brush or box masks).

Everything is seeded: the same `seed` gives bit-identical output, and the drawn parameters are
returned so trainers and `idgen eval restore` can log them. Images are RGB uint8 `[H, W, 3]`;
clips `[T, H, W, 3]` share one draw of the parameters (noise and JPEG are applied per frame).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from .errors import IdgenError

TASKS = ("bfr", "colorize", "inpaint")


@dataclass(frozen=True)
class DegradationPreset:
    """Ranges of the blind degradation (each drawn uniformly). Units: σ in pixels, r a factor,
    noise δ in 0–255 units, JPEG quality 0–100, colour shift in 0–255 units."""

    kernel_size: int = 41
    kernel_probs: tuple[float, float] = (0.5, 0.5)  # isotropic, anisotropic
    blur_sigma: tuple[float, float] = (0.1, 10.0)
    downsample: tuple[float, float] = (0.8, 8.0)
    noise: tuple[float, float] = (0.0, 20.0)
    jpeg_quality: tuple[int, int] = (60, 100)
    color_jitter_prob: float = 0.3
    color_jitter_shift: float = 20.0
    gray_prob: float = 0.01


#: Published ranges: GFPGAN's `train_gfpgan_v1.yml`; CodeFormer's heavy stage-2/3 degradation and a
#: light variant (CodeFormer's `codeformer_*` dataset options).
PRESETS: dict[str, DegradationPreset] = {
    "gfpgan": DegradationPreset(),
    "codeformer": DegradationPreset(blur_sigma=(1.0, 15.0), downsample=(4.0, 30.0), noise=(0.0, 20.0),
                                    jpeg_quality=(30, 80), color_jitter_prob=0.0, gray_prob=0.0),
    "codeformer-light": DegradationPreset(blur_sigma=(0.1, 10.0), downsample=(1.0, 12.0), noise=(0.0, 15.0),
                                          jpeg_quality=(60, 100), color_jitter_prob=0.0, gray_prob=0.0),
}


@dataclass
class Degraded:
    """A degraded image `[H, W, 3]` (or clip `[T, H, W, 3]`) uint8, the drawn `params`, and the
    inpainting `mask` `[H, W]` float32 (1 = region to fill) when that task was drawn."""

    image: np.ndarray
    params: dict = field(default_factory=dict)
    mask: Optional[np.ndarray] = None


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """A `size` x `size` Gaussian kernel (sums to 1) with standard deviations `sigma_x`, `sigma_y`
    (pixels) along axes rotated by `angle` (radians); `sigma_x == sigma_y` is isotropic."""
    if size % 2 == 0 or size < 3:
        raise IdgenError(f"kernel size must be odd and >= 3, got {size}.")
    half = size // 2
    y, x = np.mgrid[-half: half + 1, -half: half + 1].astype(np.float64)
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    kernel = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).astype(np.float32)


def draw_params(preset: Union[str, DegradationPreset], rng: np.random.Generator) -> dict:
    """One draw of the blind-degradation parameters from `preset`."""
    p = _preset(preset)
    aniso = bool(rng.uniform() < p.kernel_probs[1] / sum(p.kernel_probs))
    sigma_x = float(rng.uniform(*p.blur_sigma))
    sigma_y = float(rng.uniform(*p.blur_sigma)) if aniso else sigma_x
    return {
        "kernel": "aniso" if aniso else "iso", "kernel_size": p.kernel_size, "sigma_x": sigma_x, "sigma_y": sigma_y,
        "angle": float(rng.uniform(-math.pi, math.pi)) if aniso else 0.0,
        "downsample": float(rng.uniform(*p.downsample)),
        "noise": float(rng.uniform(*p.noise)),
        "jpeg_quality": int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)),
        "color_shift": ([float(v) for v in rng.uniform(-p.color_jitter_shift, p.color_jitter_shift, 3)]
                        if rng.uniform() < p.color_jitter_prob else None),
        "gray": bool(rng.uniform() < p.gray_prob),
    }


def _preset(preset: Union[str, DegradationPreset]) -> DegradationPreset:
    if isinstance(preset, DegradationPreset):
        return preset
    if preset not in PRESETS:
        raise IdgenError(f"unknown degradation preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    return PRESETS[preset]


def apply_blind(image: np.ndarray, params: dict, rng: np.random.Generator) -> np.ndarray:
    """Blur, downsample, noise, JPEG, resize back, colour jitter, greyscale — in GFPGAN's order."""
    h, w = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    kernel = gaussian_kernel(params["kernel_size"], params["sigma_x"], params["sigma_y"], params["angle"])
    x = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT101)
    r = params["downsample"]
    x = cv2.resize(x, (max(1, int(round(w / r))), max(1, int(round(h / r)))), interpolation=cv2.INTER_LINEAR)
    if params["noise"] > 0:
        x = x + rng.normal(0.0, params["noise"] / 255.0, x.shape).astype(np.float32)
    x = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", x[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), params["jpeg_quality"]])
    x = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    if params["color_shift"] is not None:
        x = x + np.asarray(params["color_shift"], np.float32)
    if params["gray"]:
        x = np.repeat(cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)[..., None], 3, -1)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def grayscale(image: np.ndarray) -> np.ndarray:
    """The colorization task's input: luminance replicated to 3 channels."""
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=-1)


def random_brush_mask(size: tuple[int, int], rng: np.random.Generator, *, strokes: tuple[int, int] = (1, 4),
                      width: tuple[int, int] = (10, 40)) -> np.ndarray:
    """Free-form brush strokes (random walks of thick lines), `[H, W]` float32 in {0, 1}.
    `size` is `(width, height)`; stroke width in pixels at 512 px (scaled with the image)."""
    w, h = size
    scale = min(w, h) / 512.0
    mask = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(strokes[0], strokes[1] + 1))):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        thickness = max(1, int(rng.integers(width[0], width[1] + 1) * scale))
        for _ in range(int(rng.integers(4, 12))):
            angle, length = rng.uniform(0, 2 * math.pi), rng.uniform(10, 60) * scale
            nx = int(np.clip(x + length * math.cos(angle), 0, w - 1))
            ny = int(np.clip(y + length * math.sin(angle), 0, h - 1))
            cv2.line(mask, (x, y), (nx, ny), 1, thickness)
            x, y = nx, ny
    return mask.astype(np.float32)


def random_box_mask(size: tuple[int, int], rng: np.random.Generator, *, area: tuple[float, float] = (0.05, 0.25)) -> np.ndarray:
    """One random rectangle covering `area` of the image, `[H, W]` float32 in {0, 1}."""
    w, h = size
    fraction = rng.uniform(*area)
    aspect = rng.uniform(0.5, 2.0)
    bw = int(np.clip(math.sqrt(fraction * w * h * aspect), 1, w))
    bh = int(np.clip(fraction * w * h / bw, 1, h))
    x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    mask = np.zeros((h, w), np.float32)
    mask[y: y + bh, x: x + bw] = 1.0
    return mask


def apply_mask(image: np.ndarray, mask: np.ndarray, fill: int = 0) -> np.ndarray:
    """The inpainting task's input: the masked region (mask > 0.5) set to `fill` (black)."""
    out = image.copy()
    out[mask > 0.5] = fill
    return out


def degrade(image_or_clip: np.ndarray, preset: Union[str, DegradationPreset] = "gfpgan", *, seed: Optional[int] = None,
            rng: Optional[np.random.Generator] = None, tasks: Sequence[str] = ("bfr",)) -> Degraded:
    """Degrade an image `[H, W, 3]` or a clip `[T, H, W, 3]` (uint8 RGB) for the given tasks.

    Args:
        preset: a name in `PRESETS` or a `DegradationPreset` (the "bfr" task).
        seed / rng: the randomness (exactly one; same seed, same output).
        tasks: any combination of "bfr" (blind degradation), "colorize" (grey input) and
            "inpaint" (a brush or box mask, filled black); applied in that order.
    """
    array = np.asarray(image_or_clip)
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise IdgenError(f"degrade takes uint8 RGB [H, W, 3] or [T, H, W, 3]; got {array.dtype} {tuple(array.shape)}.")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise IdgenError(f"tasks must be a non-empty combination of {TASKS}; got {list(tasks)}.")
    if (seed is None) == (rng is None):
        raise IdgenError("give exactly one of `seed` and `rng`.")
    rng = rng if rng is not None else np.random.default_rng(seed)
    clip = array if array.ndim == 4 else array[None]
    params: dict = {"tasks": list(tasks)}
    frames = [frame for frame in clip]
    if "bfr" in tasks:
        blind = draw_params(preset, rng)
        params.update(blind, preset=preset if isinstance(preset, str) else asdict(preset))
        frames = [apply_blind(f, blind, rng) for f in frames]
    if "colorize" in tasks:
        frames = [grayscale(f) for f in frames]
    mask = None
    if "inpaint" in tasks:
        size = (clip.shape[2], clip.shape[1])
        kind = "brush" if rng.uniform() < 0.5 else "box"
        mask = random_brush_mask(size, rng) if kind == "brush" else random_box_mask(size, rng)
        params["mask"] = kind
        frames = [apply_mask(f, mask) for f in frames]
    out = np.stack(frames)
    return Degraded(image=out if array.ndim == 4 else out[0], params=params, mask=mask)
